/**
 * The one Mosquitto launcher of the tests, the hostile suite and the benches: a real Mosquitto 2 started with the
 * configuration and ACL blackcloud generates (functions/broker/mosquitto-config.ts), bound to 127.0.0.1 on a port
 * the OS picked (or `options.port`), plus what a test process needs (stay root, no persistence, log to stderr).
 * `kill()` stops it (SIGTERM, waits for the exit), `restart()` starts it again on the same port, `stop()` ends
 * it for good. A missing `mosquitto` binary rejects naming the Debian package (never a skip).
 * `dynamicSecurity` runs it with the dynamic-security plugin instead of the ACL file (the same generator,
 * `dynamicSecurityConfig` writes its initial JSON; the plugin rewrites that file as commands change it, and
 * `restart()` keeps it); `dynamicSecurityPlugin` is where Debian's package puts the plugin on this machine.
 * `fileLimit` starts it under `prlimit --nofile=N:N` (util-linux; raising the hard limit needs root): a broker
 * holding thousands of sessions needs one descriptor per session. `pid()` is the running broker's process id
 * (prlimit execs in place, so it is Mosquitto's), for reading /proc.
 *
 * `startMosquittoWithClient(brokers)` is the benches' form: a temp directory with a fresh CA (functions/pki), the
 * broker certificate and one client certificate (CN `BENCH_IDENTITY`, so its topics are
 * `deviceTopic(BENCH_IDENTITY, ...)`), and `brokers` such brokers, one port each.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  debianDynsecPlugin,
  dynamicSecurityConfig,
  mosquittoAcl,
  mosquittoConf,
} from '../../functions/broker/mosquitto-config.ts';
import { ensureLocalPki, issueCertificate, loadPem, writePemFiles } from '../../functions/pki/local-ca.ts';
import { freePort, requireTool } from '../functions/local/helpers.ts';

export interface RunningMosquitto {
  readonly port: number;
  /** Everything Mosquitto logged so far. */
  log(): string;
  /** The running broker's process id (undefined while stopped). */
  pid(): number | undefined;
  /** Stops the broker only (its files stay, `restart` may follow). */
  kill(): Promise<void>;
  /** Stops it and starts it again on the same port. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface MosquittoOptions {
  /** @default a port the OS picked */
  readonly port?: number;
  /** `log_type` lines: 'all' (default) or only errors (a bench's throughput must not wait for its log). */
  readonly logType?: 'all' | 'error';
  /** More mosquitto.conf lines, e.g. `max_queued_messages 100000`. */
  readonly extraConf?: readonly string[];
  /** The plain profile's listener (mosquittoConf `plainListener`) on this port of 127.0.0.1; needs dynamicSecurity. */
  readonly plainPort?: number;
  /** The dynamic-security plugin instead of the ACL file, with these devices in its initial JSON. */
  readonly dynamicSecurity?: {
    readonly devices?: readonly { readonly id: string; readonly enabled: boolean }[];
  };
  /** RLIMIT_NOFILE (soft and hard) of the broker, set with `prlimit`. @default inherited */
  readonly fileLimit?: number;
}

/** Debian's dynamic-security plugin for this machine's architecture. */
export function dynamicSecurityPlugin(): string {
  return debianDynsecPlugin(process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu');
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** `tlsDir` holds ca.crt, broker.crt and broker.key (e.g. the local PKI directory); files go into `workDir`. */
export async function startMosquitto(
  tlsDir: string,
  workDir: string,
  options: MosquittoOptions = {},
): Promise<RunningMosquitto> {
  const binary = await requireTool('mosquitto', 'mosquitto');
  const prlimit = options.fileLimit === undefined ? undefined : await requireTool('prlimit', 'util-linux');
  const port = options.port ?? (await freePort());
  const aclFile = join(workDir, 'mosquitto.acl');
  const dynsecFile = join(workDir, 'dynamic-security.json');
  const confFile = join(workDir, 'mosquitto.conf');
  const access =
    options.dynamicSecurity === undefined
      ? { aclFile }
      : { dynamicSecurity: { plugin: dynamicSecurityPlugin(), configFile: dynsecFile } };
  if (options.dynamicSecurity === undefined) await writeFile(aclFile, mosquittoAcl(), { mode: 0o600 });
  else {
    await writeFile(dynsecFile, dynamicSecurityConfig({ devices: options.dynamicSecurity.devices ?? [] }), {
      mode: 0o600,
    });
  }
  // The generated configuration as is, plus what a test process needs: stay root, no persistence, log to stderr.
  await writeFile(
    confFile,
    [
      mosquittoConf({
        port,
        bindAddress: '127.0.0.1',
        tlsDir,
        ...access,
        ...(options.plainPort === undefined
          ? {}
          : { plainListener: { port: options.plainPort, bindAddress: '127.0.0.1' } }),
      }),
      'user root',
      'persistence false',
      'log_dest stderr',
      `log_type ${options.logType ?? 'all'}`,
      ...(options.extraConf ?? []),
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  let output = '';
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    const spawned =
      prlimit === undefined
        ? spawn(binary, ['-c', confFile], { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn(prlimit, [`--nofile=${options.fileLimit}:${options.fileLimit}`, binary, '-c', confFile], {
            stdio: ['ignore', 'pipe', 'pipe'],
          });
    child = spawned;
    const collect = (chunk: Buffer) => {
      output += chunk.toString();
    };
    spawned.stdout?.on('data', collect);
    spawned.stderr?.on('data', collect);
    for (let attempt = 0; ; attempt++) {
      if (spawned.exitCode !== null) throw new Error(`mosquitto exited (${spawned.exitCode}): ${output}`);
      if (await listening(port)) return;
      if (attempt > 200) {
        spawned.kill('SIGTERM');
        throw new Error(`mosquitto did not listen on ${port} within 10 s: ${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const kill = async (): Promise<void> => {
    const running = child;
    child = undefined;
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return;
    const gone = new Promise((resolve) => running.once('exit', resolve));
    running.kill('SIGTERM');
    await gone;
  };
  await start();
  return {
    port,
    log: () => output,
    pid: () => child?.pid,
    kill,
    async restart() {
      await kill();
      await start();
    },
    stop: kill,
  };
}

/** The client certificate's common name in `startMosquittoWithClient`: the MQTT username the ACL applies to. */
export const BENCH_IDENTITY = 'bench-device';

export interface ClientTls {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface MosquittoWithClient {
  /** One port per broker. */
  readonly ports: readonly number[];
  /** The client's CA, certificate (CN `BENCH_IDENTITY`) and key, PEM. */
  readonly tls: ClientTls;
  /** Every broker's log so far. */
  log(): string;
  restart(): Promise<void>;
  /** Stops the brokers only (the directory stays, `restart` may follow). */
  kill(): Promise<void>;
  /** Stops the brokers and removes the directory (idempotent). */
  stop(): Promise<void>;
}

export async function startMosquittoWithClient(
  brokers = 1,
  options: Omit<MosquittoOptions, 'port'> = {},
): Promise<MosquittoWithClient> {
  const dir = await mkdtemp(join(tmpdir(), 'bc8-mosquitto-'));
  const pkiDir = join(dir, 'pki');
  const pki = await ensureLocalPki(pkiDir);
  const ca = await loadPem(pki.caCert, pki.caKey);
  const client = await issueCertificate(ca, { commonName: BENCH_IDENTITY, kind: 'client' });
  await writePemFiles(join(pkiDir, 'client.pem'), join(pkiDir, 'client.key'), client);
  const running: RunningMosquitto[] = [];
  const all = async (each: (broker: RunningMosquitto) => Promise<void>) => {
    await Promise.all(running.map(each));
  };
  try {
    for (let i = 0; i < brokers; i++) {
      const workDir = join(dir, `broker-${i}`);
      await mkdir(workDir);
      running.push(await startMosquitto(pkiDir, workDir, options));
    }
  } catch (error) {
    await all((broker) => broker.stop());
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    ports: running.map((broker) => broker.port),
    tls: { ca: ca.cert, cert: client.cert, key: client.key },
    log: () => running.map((broker) => broker.log()).join(''),
    kill: () => all((broker) => broker.kill()),
    restart: () => all((broker) => broker.restart()),
    async stop() {
      await all((broker) => broker.stop());
      await rm(dir, { recursive: true, force: true });
    },
  };
}
