/**
 * `blackcloud up --readers N` (and the config file's `readers`): default 1, validated 1..MAX_READERS with an
 * error naming the flag, and the local cloud's receiver binds that many sockets on its SPA port.
 */
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { LocalConfigError, resolveUpConfig } from '../../../functions/local/up-config.ts';
import { MAX_READERS } from '../../../functions/receiver/udp-receiver.ts';

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
});
