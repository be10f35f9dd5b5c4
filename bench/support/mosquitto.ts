/**
 * A real Mosquitto 2 with mutual TLS for the benches and the hostile suite: a temp directory holding a fresh CA
 * (functions/pki), the broker certificate and one client certificate (CN `bench-device`), a config with one or
 * more TLS listeners on 127.0.0.1 (`require_certificate`, `use_identity_as_username`, no persistence), and the
 * broker as a child process. `restart()` stops it (SIGTERM, waits for exit) and starts it again on the same ports;
 * `stop()` also removes the directory (idempotent). Ports are picked by the OS (bind port 0, read back, release),
 * the same way test/functions/local/helpers.ts `freePort` does. Fails naming the tool when `mosquitto` is missing.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureLocalPki, issueCertificate, loadPem, writePemFiles } from '../../functions/pki/local-ca.ts';
import { freePort, requireTool } from '../../test/functions/local/helpers.ts';

export interface ClientTls {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface Mosquitto {
  readonly ports: readonly number[];
  readonly tls: ClientTls;
  /** The broker's stderr so far (for error messages). */
  log(): string;
  restart(): Promise<void>;
  /** Stops the broker only (the directory stays, `restart` may follow). */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

function listening(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = tcpConnect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });
}

export async function startMosquitto(listeners = 1): Promise<Mosquitto> {
  const binary = await requireTool('mosquitto', 'mosquitto');
  const dir = await mkdtemp(join(tmpdir(), 'bc8-mosquitto-'));
  const pki = await ensureLocalPki(join(dir, 'pki'));
  const ca = await loadPem(pki.caCert, pki.caKey);
  const client = await issueCertificate(ca, { commonName: 'bench-device', kind: 'client' });
  const clientCert = join(dir, 'pki', 'client.pem');
  const clientKey = join(dir, 'pki', 'client.key');
  await writePemFiles(clientCert, clientKey, client);
  const ports: number[] = [];
  for (let i = 0; i < listeners; i++) ports.push(await freePort());
  const conf = join(dir, 'mosquitto.conf');
  await writeFile(
    conf,
    [
      'user root',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'max_queued_messages 100000',
      'set_tcp_nodelay true',
      ...ports.flatMap((port) => [
        `listener ${port} 127.0.0.1`,
        `cafile ${pki.caCert}`,
        `certfile ${pki.brokerCert}`,
        `keyfile ${pki.brokerKey}`,
        'require_certificate true',
        'use_identity_as_username true',
      ]),
      '',
    ].join('\n'),
  );
  let log = '';
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    const spawned = spawn(binary, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = spawned;
    spawned.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      log += chunk;
    });
    const started = Date.now();
    for (;;) {
      if (spawned.exitCode !== null)
        throw new Error(`mosquitto exited at start (${spawned.exitCode}): ${log}`);
      if ((await Promise.all(ports.map(listening))).every(Boolean)) return;
      if (Date.now() - started > 10_000) throw new Error(`mosquitto did not listen within 10 s: ${log}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
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
  const tls: ClientTls = { ca: ca.cert, cert: client.cert, key: client.key };
  return {
    ports,
    tls,
    log: () => log,
    kill,
    async restart() {
      await kill();
      await start();
    },
    async stop() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
