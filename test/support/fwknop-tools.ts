/**
 * Helpers that run the REAL fwknop 2.6.10 tools for the interop tests (test/interop/):
 * - `requireTools` fails (throws, naming the tool) when fwknop, fwknopd or ip is missing: never a skip;
 * - `fwknopKeyGen` and `fwknopClientPacket` run the `fwknop` client in an isolated HOME (`--no-rc-file`,
 *   `--no-save-args`, `--test --save-packet`), so nothing is sent and ~/.fwknoprc is never read or written;
 * - `NetworkNamespace` is a private network namespace (unique name) where fwknopd runs, so its firewall changes
 *   (iptables, without -t) can only touch that namespace; `sendUdp` sends a datagram from inside it;
 * - `Fwknopd` starts fwknopd in the foreground in a namespace, collects its log, and waits for log lines with a
 *   bounded poll (never a fixed sleep). Everything it creates lives in a temp dir removed by `stop`/`remove`.
 * Keys are passed on the command line only because these are throwaway test keys.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Absolute path of `tool` on PATH (or /usr/sbin, /sbin), or an Error that names the missing tool. */
export async function findTool(tool: string): Promise<string> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const candidate = join(dir, tool);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next directory
    }
  }
  throw new Error(
    `required tool '${tool}' is not installed (searched PATH, /usr/sbin, /sbin). ` +
      `Install it (Debian: apt-get install ${tool === 'ip' ? 'iproute2' : tool === 'fwknopd' ? 'fwknop-server' : 'fwknop-client'}).`,
  );
}

export interface Tools {
  readonly fwknop: string;
  readonly fwknopd: string;
  readonly ip: string;
}

/** The real tools, or a failure naming the first one missing. */
export async function requireTools(...names: ('fwknop' | 'fwknopd' | 'ip')[]): Promise<Partial<Tools>> {
  const found: Record<string, string> = {};
  for (const name of names) found[name] = await findTool(name);
  return found;
}

/** A temp dir usable as HOME for the client (so ~/.fwknoprc is never touched). */
export async function makeTempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `${prefix}-`));
}

export interface Base64Keys {
  /** KEY_BASE64 */
  readonly key: string;
  /** HMAC_KEY_BASE64 */
  readonly hmacKey: string;
}

/** `fwknop --key-gen`: a fresh 32-byte Rijndael key and 64-byte HMAC key, base64. */
export async function fwknopKeyGen(fwknop: string, home: string): Promise<Base64Keys> {
  const { stdout } = await execFileAsync(fwknop, ['--key-gen'], { env: clientEnv(home), timeout: 15_000 });
  const key = /^KEY_BASE64:\s+(\S+)$/m.exec(stdout)?.[1];
  const hmacKey = /^HMAC_KEY_BASE64:\s+(\S+)$/m.exec(stdout)?.[1];
  if (key === undefined || hmacKey === undefined)
    throw new Error(`unexpected fwknop --key-gen output: ${stdout}`);
  return { key, hmacKey };
}

function clientEnv(home: string): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, LOGNAME: 'root', USER: 'root' };
}

let packetCounter = 0;

export interface ClientPacketOptions {
  /** Add an HMAC (--use-hmac --key-base64-hmac); default true. */
  readonly useHmac?: boolean;
  /** Give the Rijndael key as a passphrase (--key-rijndael) instead of keys.key. */
  readonly passphrase?: string;
}

/**
 * One packet from the real client: `fwknop --test --save-packet FILE -D 127.0.0.1 --use-hmac ... <args>`.
 * Returns the saved wire bytes (the file's trailing newline removed) and the client's verbose output.
 */
export async function fwknopClientPacket(
  fwknop: string,
  home: string,
  keys: Base64Keys,
  args: readonly string[],
  options: ClientPacketOptions = {},
): Promise<{ wire: Uint8Array; output: string }> {
  const file = join(home, `packet-${process.pid}-${++packetCounter}.txt`);
  const argv = [
    '--no-rc-file',
    '--no-save-args',
    '--test',
    '-v',
    '-D',
    '127.0.0.1',
    ...(options.passphrase === undefined
      ? ['--key-base64-rijndael', keys.key]
      : ['--key-rijndael', options.passphrase]),
    ...(options.useHmac === false ? [] : ['--use-hmac', '--key-base64-hmac', keys.hmacKey]),
    '--save-packet',
    file,
    ...args,
  ];
  let output: string;
  try {
    const result = await execFileAsync(fwknop, argv, { env: clientEnv(home), timeout: 15_000 });
    output = result.stdout + result.stderr;
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    throw new Error(`fwknop ${args.join(' ')} failed: ${e.stderr ?? ''}${e.stdout ?? ''}`, { cause: error });
  }
  const text = (await readFile(file, 'utf8')).replace(/\n$/, '');
  await rm(file, { force: true });
  return { wire: new TextEncoder().encode(text), output };
}

/** A private network namespace with only `lo` up; its name is unique per instance. */
export class NetworkNamespace {
  readonly name: string;
  /** Absolute path of the `ip` tool. */
  readonly ip: string;

  private constructor(name: string, ip: string) {
    this.name = name;
    this.ip = ip;
  }

  /** An existing namespace (e.g. one end of test/support/netns.ts's pair); `remove()` deletes it. */
  static adopt(ip: string, name: string): NetworkNamespace {
    return new NetworkNamespace(name, ip);
  }

  static async create(ip: string, label: string): Promise<NetworkNamespace> {
    const name = `bc-${label}-${process.pid}-${randomBytes(3).toString('hex')}`;
    await execFileAsync(ip, ['netns', 'add', name]);
    const ns = new NetworkNamespace(name, ip);
    await ns.exec(ip, ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** Run a command inside the namespace and return its stdout. */
  async exec(command: string, args: readonly string[]): Promise<string> {
    const { stdout } = await execFileAsync(this.ip, ['netns', 'exec', this.name, command, ...args], {
      timeout: 15_000,
    });
    return stdout;
  }

  /** A free UDP port inside the namespace: bind port 0 there and read it back. */
  async freeUdpPort(): Promise<number> {
    const script =
      "const s=require('node:dgram').createSocket('udp4');" +
      "s.bind(0,'127.0.0.1',()=>{process.stdout.write(String(s.address().port));s.close();});";
    const port = Number(await this.exec(process.execPath, ['-e', script]));
    if (!Number.isInteger(port) || port <= 0)
      throw new Error(`could not read a free UDP port in ${this.name}`);
    return port;
  }

  /** Send one UDP datagram from inside the namespace to 127.0.0.1:`port`. */
  async sendUdp(port: number, payload: Uint8Array): Promise<void> {
    const script =
      "const s=require('node:dgram').createSocket('udp4');" +
      "s.send(Buffer.from(process.argv[2],'base64'),Number(process.argv[1]),'127.0.0.1',(e)=>{s.close();if(e)throw e;});";
    await this.exec(process.execPath, ['-e', script, String(port), Buffer.from(payload).toString('base64')]);
  }

  /** Delete the namespace; deleting one that is gone succeeds. */
  async remove(): Promise<void> {
    try {
      await execFileAsync(this.ip, ['netns', 'delete', this.name]);
    } catch (error) {
      const { stdout } = await execFileAsync(this.ip, ['netns', 'list']);
      if (stdout.split('\n').some((line) => line.split(' ')[0] === this.name)) throw error;
    }
  }
}

export interface FwknopdStanza {
  readonly keys: Base64Keys;
  /** fwknopd's HMAC_DIGEST_TYPE spelling: md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512. */
  readonly hmacDigestType: string;
  readonly openPorts?: string;
  /** Extra access.conf lines, e.g. 'CMD_CYCLE_OPEN /bin/true'. */
  readonly extra?: readonly string[];
}

export interface FwknopdOptions {
  readonly fwknopd: string;
  readonly namespace: NetworkNamespace;
  readonly stanzas: readonly FwknopdStanza[];
  /** -t: decode and log, but never touch the firewall (and never record digests). */
  readonly testMode: boolean;
}

/** A running fwknopd (UDP server mode) inside a namespace, with its log collected in memory. */
export class Fwknopd {
  private log = '';
  private exited = false;

  private readonly child: ChildProcess;
  readonly dir: string;
  readonly port: number;
  readonly digestFile: string;

  private constructor(child: ChildProcess, dir: string, port: number, digestFile: string) {
    this.child = child;
    this.dir = dir;
    this.port = port;
    this.digestFile = digestFile;
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      this.log += chunk;
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.log += chunk;
    });
    child.on('exit', () => {
      this.exited = true;
    });
  }

  static async start(options: FwknopdOptions): Promise<Fwknopd> {
    const dir = await makeTempDir('bc-fwknopd');
    const port = await options.namespace.freeUdpPort();
    const conf = join(dir, 'fwknopd.conf');
    const accessConf = join(dir, 'access.conf');
    const digestFile = join(dir, 'digest.cache');
    await writeFile(conf, ['PCAP_INTF lo', 'ENABLE_UDP_SERVER Y', `UDPSERV_PORT ${port}`, ''].join('\n'));
    const stanzas = options.stanzas.map((stanza) =>
      [
        'SOURCE ANY',
        `KEY_BASE64 ${stanza.keys.key}`,
        `HMAC_KEY_BASE64 ${stanza.keys.hmacKey}`,
        `HMAC_DIGEST_TYPE ${stanza.hmacDigestType}`,
        `OPEN_PORTS ${stanza.openPorts ?? 'tcp/8883'}`,
        'FW_ACCESS_TIMEOUT 30',
        ...(stanza.extra ?? []),
      ].join('\n'),
    );
    await writeFile(accessConf, `${stanzas.join('\n\n')}\n`);
    await chmod(conf, 0o600);
    await chmod(accessConf, 0o600);
    const args = [
      'netns',
      'exec',
      options.namespace.name,
      options.fwknopd,
      '-c',
      conf,
      '-a',
      accessConf,
      '-f',
      '-v',
      '-v',
      '-d',
      digestFile,
      '--pid-file',
      join(dir, 'fwknopd.pid'),
      '-r',
      dir,
      ...(options.testMode ? ['-t'] : []),
    ];
    // `ip netns exec` execs fwknopd in place, so the child pid is fwknopd's.
    const child = spawn(options.namespace.ip, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const server = new Fwknopd(child, dir, port, digestFile);
    await server.waitFor(new RegExp(`Kicking off UDP server to listen on port ${port}`), 0);
    return server;
  }

  /** The log collected so far. */
  get output(): string {
    return this.log;
  }

  /** An offset into the log: `waitFor(…, mark())` only looks at what is logged after now. */
  mark(): number {
    return this.log.length;
  }

  /** Wait (bounded poll) until `pattern` matches the log after `from`; returns the log from `from` to the end. */
  async waitFor(pattern: RegExp, from: number, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const tail = this.log.slice(from);
      if (pattern.test(tail)) return tail;
      if (this.exited) throw new Error(`fwknopd exited before logging ${pattern}:\n${this.log}`);
      if (Date.now() > deadline)
        throw new Error(`fwknopd did not log ${pattern} in ${timeoutMs} ms:\n${tail}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Stop fwknopd (SIGTERM, then SIGKILL) and remove its temp dir. Idempotent. */
  async stop(): Promise<void> {
    if (!this.exited && this.child.pid !== undefined) {
      const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** The field dump fwknopd logs after `SPA Decode (res=0):`, as a name → value map (first dump after `from`). */
export function parseDecodeDump(log: string): Record<string, string> {
  const start = log.search(/SPA Decode \(res=0\):/);
  if (start < 0) return {};
  const fields: Record<string, string> = {};
  for (const line of log.slice(start).split('\n').slice(1)) {
    const match = /^\s*([A-Za-z][A-Za-z ]*?):\s?(.*)$/.exec(line);
    if (match === null) {
      if (line.trim() === '' && Object.keys(fields).length > 2) break;
      continue;
    }
    const [, name, value] = match as unknown as [string, string, string];
    if (!(name in fields)) fields[name] = value.trim();
  }
  return fields;
}
