/**
 * `blackcloud up --readers N` (and the config file's `readers`): default 1, validated 1..MAX_READERS with an
 * error naming the flag, and the local cloud's receiver runs that many reader threads on its SPA port
 * (reader-workers.ts): the demo device's knock is accepted once (its copy is a replay), and a device added while
 * `up` runs is known to the reader threads after the reload.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import { DEMO_DEVICE_ID } from '../../../functions/local/data-dir.ts';
import { startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { provisionDevice } from '../../../functions/local/provision-device.ts';
import { LocalConfigError, resolveUpConfig } from '../../../functions/local/up-config.ts';
import { loadPem } from '../../../functions/pki/local-ca.ts';
import { MAX_READERS } from '../../../functions/receiver/udp-receiver.ts';
import { waitFor } from './helpers.ts';

const knockIo = { now: () => Date.now(), randomBytes: (n: number) => new Uint8Array(randomBytes(n)) };

describe('up --readers', () => {
  it('defaults to 1; the flag wins over the file; out-of-range or non-integer values name --readers', () => {
    expect(resolveUpConfig({}).readers).toBe(1);
    expect(resolveUpConfig({ readers: '2' }).readers).toBe(2);
    expect(resolveUpConfig({ readers: '3' }, { readers: 2, source: 'up.yaml' }).readers).toBe(3);
    expect(resolveUpConfig({}, { readers: 4, source: 'up.yaml' }).readers).toBe(4);
    for (const bad of ['0', String(MAX_READERS + 1), '1.5', 'two', '-1']) {
      expect(() => resolveUpConfig({ readers: bad })).toThrow(LocalConfigError);
      expect(() => resolveUpConfig({ readers: bad })).toThrow(/--readers.*must be an integer 1\.\.64/);
    }
  });

  it('the local cloud started with readers 2 binds its SPA port with SO_REUSEPORT (one reader does not: replay-readers.test.ts)', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'bc-readers-'));
    try {
      const cloud = await startLocalCloud(
        resolveUpConfig({ dataDir, spaPort: '0', mqttPort: '0', readers: '2' }),
      );
      try {
        // Only a receiver whose sockets have SO_REUSEPORT (readers > 1) lets another such socket join its port.
        const joiner = createSocket({ type: 'udp4', reusePort: true });
        const joined = await new Promise<boolean>((resolve) => {
          joiner.once('error', () => resolve(false));
          joiner.bind({ address: cloud.endpoints.host, port: cloud.endpoints.spaPort }, () => resolve(true));
        });
        joiner.close();
        expect(joined).toBe(true);
      } finally {
        await cloud.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 60_000);

  it('with readers 2: the demo knock is accepted once across reader threads, and a device added while up runs is accepted after the reload', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'bc-readers-'));
    try {
      const cloud = await startLocalCloud(
        resolveUpConfig({ dataDir, spaPort: '0', mqttPort: '0', readers: '2' }),
      );
      try {
        const demo = await loadDeviceConfig(cloud.layout.deviceFile(DEMO_DEVICE_ID));
        const { bytes } = buildKnock(demo, knockIo, demo.spa.format);
        await sendDatagram(demo.spa.host, demo.spa.port, bytes);
        await sendDatagram(demo.spa.host, demo.spa.port, bytes);
        await waitFor(
          () => (cloud.counters()['rejected.replay'] === 1 && cloud.counters().accepted === 1) || undefined,
          'one acceptance and one replay',
        );
        const ca = await loadPem(`${cloud.layout.pkiDir}/ca.crt`, `${cloud.layout.pkiDir}/ca.key`);
        await provisionDevice({
          layout: cloud.layout,
          deviceId: 'late-reader',
          format: 'fwknop',
          access: [{ protocol: 'tcp', port: cloud.mqtt.port }],
          endpoints: cloud.endpoints,
          ca,
          caFile: `${cloud.layout.pkiDir}/ca.crt`,
          random: knockIo,
        });
        await waitFor(() => cloud.directory.byId('late-reader'), 'the directory to reload');
        const late = await loadDeviceConfig(cloud.layout.deviceFile('late-reader'));
        // The reader threads get the reloaded devices right after the reload; a knock sent before may miss.
        await waitFor(async () => {
          const knock = buildKnock(late, knockIo, late.spa.format).bytes;
          await sendDatagram(late.spa.host, late.spa.port, knock);
          await new Promise((resolve) => setTimeout(resolve, 100));
          return (cloud.counters()['accepted.fwknop'] ?? 0) >= 1 || undefined;
        }, 'the new device accepted');
        expect(cloud.counters().accepted).toBe(2);
      } finally {
        await cloud.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});
