/**
 * functions/aws/broker-sync.ts against a real Mosquitto with the dynamic-security plugin: a broker that boots after
 * the receiver is brought in step once it listens (the connect is retried); no index yet means no change at the
 * broker (an empty list would delete every device); a restarted broker whose file lost the devices is re-enrolled
 * on reconnect.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type AwsBrokerSync, startAwsBrokerSync } from '../../../functions/aws/broker-sync.ts';
import { dynamicSecurityConfig } from '../../../functions/broker/mosquitto-config.ts';
import { systemTimers } from '../../../functions/core/system.ts';
import { CONTROLLER_IDENTITY } from '../../../functions/core/topics.ts';
import { ensureLocalPki, issueCertificate, loadPem, writePemFiles } from '../../../functions/pki/local-ca.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { freePort } from '../local/helpers.ts';

let dir: string | undefined;
let mosquitto: RunningMosquitto | undefined;
let sync: AwsBrokerSync | undefined;

afterEach(async () => {
  await sync?.close();
  sync = undefined;
  await mosquitto?.stop();
  mosquitto = undefined;
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function setup(): Promise<{ pkiDir: string; work: string }> {
  dir = await mkdtemp(join(tmpdir(), 'bc-broker-sync-'));
  const pkiDir = join(dir, 'pki');
  const pki = await ensureLocalPki(pkiDir);
  const ca = await loadPem(pki.caCert, pki.caKey);
  const controller = await issueCertificate(ca, { commonName: CONTROLLER_IDENTITY, kind: 'client' });
  await writePemFiles(join(pkiDir, 'controller.crt'), join(pkiDir, 'controller.key'), controller);
  const work = join(dir, 'broker');
  await mkdir(work);
  return { pkiDir, work };
}

async function devicesInFile(work: string): Promise<string[]> {
  const state = JSON.parse(await readFile(join(work, 'dynamic-security.json'), 'utf8')) as {
    clients: { username: string }[];
  };
  return state.clients
    .map((client) => client.username)
    .filter((name) => name !== CONTROLLER_IDENTITY)
    .sort();
}

async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what} not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('AWS broker sync (dynamic security)', () => {
  it('GIVEN a broker that is not up yet WHEN it starts listening THEN the retried session enrols the index', async () => {
    const { pkiDir, work } = await setup();
    const port = await freePort();
    const lines: string[] = [];
    let devices: { id: string; enabled: boolean }[] | undefined;
    sync = startAwsBrokerSync({
      url: `mqtts://127.0.0.1:${port}`,
      ca: await readFile(join(pkiDir, 'ca.crt')),
      cert: await readFile(join(pkiDir, 'controller.crt')),
      key: await readFile(join(pkiDir, 'controller.key')),
      servername: 'localhost',
      clientId: 'blackcloud-dynsec-test',
      devices: () => devices,
      log: (level, message) => lines.push(`${level} ${message}`),
      timers: systemTimers,
      retryMs: 300,
      timeoutMs: 2_000,
    });
    await until(
      async () => lines.some((line) => line.startsWith('warn') && line.includes('no admin session')),
      10_000,
      'a warn',
    );
    mosquitto = await startMosquitto(pkiDir, work, { port, dynamicSecurity: {} });
    await until(
      async () => lines.some((line) => line.startsWith('info broker dynamic security: admin session with')),
      15_000,
      'the admin session',
    );
    // No index loaded: nothing is sent (the broker keeps what it has).
    expect(await sync.sync()).toBe(false);
    devices = [
      { id: 'meter-1', enabled: true },
      { id: 'meter-2', enabled: false },
    ];
    expect(await sync.sync(), lines.join('\n')).toBe(true);
    await until(async () => (await devicesInFile(work)).length === 2, 5_000, 'the plugin file');
    expect(await devicesInFile(work)).toEqual(['meter-1', 'meter-2']);
  }, 60_000);

  it('GIVEN a restarted broker that lost its devices WHEN the session reconnects THEN they are enrolled again', async () => {
    const { pkiDir, work } = await setup();
    mosquitto = await startMosquitto(pkiDir, work, { dynamicSecurity: {} });
    const lines: string[] = [];
    sync = startAwsBrokerSync({
      url: `mqtts://127.0.0.1:${mosquitto.port}`,
      ca: await readFile(join(pkiDir, 'ca.crt')),
      cert: await readFile(join(pkiDir, 'controller.crt')),
      key: await readFile(join(pkiDir, 'controller.key')),
      servername: 'localhost',
      clientId: 'blackcloud-dynsec-test',
      devices: () => [{ id: 'meter-1', enabled: true }],
      log: (level, message) => lines.push(`${level} ${message}`),
      timers: systemTimers,
    });
    await until(async () => (await devicesInFile(work)).includes('meter-1'), 15_000, 'the first enrolment');
    await mosquitto.kill();
    // A replaced broker: its plugin file knows only the controller again.
    await writeFile(join(work, 'dynamic-security.json'), dynamicSecurityConfig(), { mode: 0o600 });
    await mosquitto.restart();
    await until(
      async () => (await devicesInFile(work)).includes('meter-1'),
      15_000,
      'the enrolment after reconnect',
    );
  }, 60_000);
});
