import { mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../../functions/core/interfaces.ts';
import { AuditFileError, createAuditSink, formatAuditEvent } from '../../../functions/local/audit.ts';
import { handleDatagram } from '../../../functions/receiver/handle-datagram.ts';
import {
  BC1_KEY,
  bc1Packet,
  bytesFrom,
  FWKNOP_ENCRYPTION_KEY,
  FWKNOP_HMAC_KEY,
  fwknopPacket,
  harness,
  T0,
} from '../receiver/helpers.ts';

/** Every textual form a key could leak in. */
function leakForms(key: Uint8Array): string[] {
  const buffer = Buffer.from(key);
  return [
    buffer.toString('base64'),
    buffer.toString('base64').replace(/=+$/, ''),
    buffer.toString('base64url'),
    buffer.toString('hex'),
    buffer.toString('hex').toUpperCase(),
    JSON.stringify([...key]).slice(1, 40), // a serialized byte array's first numbers
  ];
}

describe('audit never carries key material', () => {
  it('serializes every event of full accept and reject paths (BC1 and fwknop) without a trace of any key', async () => {
    const h = harness();
    const remote = { address: '192.0.2.10', family: 4 as const, port: 1 };
    const seconds = Math.floor(T0 / 1000);
    const bc1 = bc1Packet({ timestampMs: T0 });
    expect((await handleDatagram(bc1, remote, h.deps)).ok).toBe(true);
    expect((await handleDatagram(bc1, remote, h.deps)).ok).toBe(false); // replay
    expect((await handleDatagram(fwknopPacket({ timestampSeconds: seconds }), remote, h.deps)).ok).toBe(true);
    await handleDatagram(fwknopPacket({ timestampSeconds: seconds, username: 'x' }), remote, h.deps);
    await handleDatagram(bc1Packet({ timestampMs: T0, key: bytesFrom('wrong', 32) }), remote, h.deps);
    await h.time.advance(31_000); // grant.revoked events
    await h.deps.grants.close();

    const types = new Set(h.audit.events.map((event) => event.type));
    expect([...types].sort()).toEqual([
      'grant.extended',
      'grant.opened',
      'grant.revoked',
      'packet.accepted',
      'packet.rejected',
    ]);
    const text = h.audit.lines().join('\n');
    for (const key of [BC1_KEY, FWKNOP_ENCRYPTION_KEY, FWKNOP_HMAC_KEY]) {
      for (const form of leakForms(key)) expect(text).not.toContain(form);
    }
    // The packets themselves are not in the audit either (only a truncated hash of the replay id).
    expect(text).not.toContain(Buffer.from(bc1).toString('hex'));
    expect(text).toMatch(/"replayIdHash":"[0-9a-f]{16}"/);
  });

  it('formatAuditEvent redacts byte arrays and key-named fields even if an event carried them by mistake', () => {
    const careless = {
      type: 'grant.failed',
      time: T0,
      deviceId: 'd',
      source: 's',
      error: 'x',
      key: 'c2VjcmV0',
      extra: { hmacKey: 'aGVsbG8', raw: Buffer.from(BC1_KEY), view: BC1_KEY },
    } as unknown as AuditEvent;
    const line = formatAuditEvent(careless);
    for (const form of leakForms(BC1_KEY)) expect(line).not.toContain(form);
    expect(line).not.toContain('c2VjcmV0');
    expect(line).not.toContain('aGVsbG8');
    expect(JSON.parse(line)).toMatchObject({
      key: '[redacted]',
      extra: { hmacKey: '[redacted]', raw: '[redacted]' },
    });
  });
});

describe('createAuditSink', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bc-audit-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const EVENT: AuditEvent = {
    type: 'packet.rejected',
    time: T0,
    source: '192.0.2.10',
    reason: 'stale',
    format: 'bc1',
  };

  it('file destination: one JSON line per event, appended, mode 0600', async () => {
    const path = join(dir, 'logs', 'audit.jsonl');
    const sink = createAuditSink({ destination: { file: path } });
    sink.write(EVENT);
    sink.write({ ...EVENT, reason: 'replay' });
    await sink.close();
    const again = createAuditSink({ destination: { file: path } });
    again.write({ ...EVENT, reason: 'auth-failed' });
    await again.close();
    const lines = (await readFile(path, 'utf8')).trim().split('\n');
    expect(lines.map((line) => JSON.parse(line).reason)).toEqual(['stale', 'replay', 'auth-failed']);
    expect(JSON.parse(lines[0]!)).toEqual(EVENT);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('never appends through a symbolic link at the audit file: a typed error naming it and the fix', async () => {
    const victim = join(dir, 'shadow');
    await writeFile(victim, 'root:x:0:0\n');
    const path = join(dir, 'audit.jsonl');
    await symlink(victim, path);
    expect(() => createAuditSink({ destination: { file: path } })).toThrow(AuditFileError);
    expect(() => createAuditSink({ destination: { file: path } })).toThrow(
      `audit file ${path} is a symbolic link, which is never written through; fix: remove it (rm ${path}) and start again`,
    );
    expect(await readFile(victim, 'utf8')).toBe('root:x:0:0\n');
  });

  it('stream destination: writes lines; a failing stream is reported once and never throws', async () => {
    const stream = new PassThrough();
    const chunks: string[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk.toString()));
    const errors: Error[] = [];
    const sink = createAuditSink({ destination: { stream }, onError: (error) => errors.push(error) });
    sink.write(EVENT);
    expect(chunks.join('')).toBe(`${JSON.stringify(EVENT)}\n`);
    stream.destroy(new Error('EPIPE'));
    await new Promise((resolve) => setImmediate(resolve));
    expect(() => sink.write(EVENT)).not.toThrow();
    expect(() => sink.write(EVENT)).not.toThrow();
    await new Promise((resolve) => setImmediate(resolve));
    expect(errors.length).toBe(1);
    await sink.close();
  });
});
