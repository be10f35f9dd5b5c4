/**
 * Test support: a real Mosquitto 2 started with the configuration and ACL blackcloud generates
 * (functions/broker/mosquitto-config.ts), on a port the OS picked (or `options.port`), bound to 127.0.0.1. `stop()` ends it (SIGTERM)
 * and waits for its exit. A missing `mosquitto` binary rejects naming the Debian package (never a skip).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { mosquittoAcl, mosquittoConf } from '../../functions/broker/mosquitto-config.ts';
import { freePort } from '../functions/local/helpers.ts';

export interface RunningMosquitto {
  readonly port: number;
  /** Everything Mosquitto logged so far. */
  log(): string;
  stop(): Promise<void>;
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
  options: { readonly port?: number } = {},
): Promise<RunningMosquitto> {
  if (spawnSync('mosquitto', ['-h']).error !== undefined) {
    throw new Error("required tool 'mosquitto' is not installed: apt-get install mosquitto");
  }
  const port = options.port ?? (await freePort());
  const aclFile = join(workDir, 'mosquitto.acl');
  const confFile = join(workDir, 'mosquitto.conf');
  await writeFile(aclFile, mosquittoAcl(), { mode: 0o600 });
  // The generated configuration as is, plus what a test process needs: stay root, no persistence, log to stderr.
  await writeFile(
    confFile,
    `${mosquittoConf({ port, bindAddress: '127.0.0.1', tlsDir, aclFile })}user root\npersistence false\nlog_dest stderr\nlog_type all\n`,
    { mode: 0o600 },
  );
  let output = '';
  const child: ChildProcess = spawn('mosquitto', ['-c', confFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited (${child.exitCode}): ${output}`);
    if (await listening(port)) break;
    if (attempt > 200) {
      child.kill('SIGTERM');
      throw new Error(`mosquitto did not listen on ${port} within 10 s: ${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    port,
    log: () => output,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
