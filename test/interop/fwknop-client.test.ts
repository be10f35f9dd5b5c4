/**
 * Interop, direction 1: packets made by the REAL fwknop 2.6.10 client (`fwknop --test --save-packet`) decode with
 * blackcloud's decodeFwknop to the right fields, for every HMAC type, every digest type and every message type;
 * tampered, truncated, wrong-key and wrong-HMAC-key packets are rejected. Fails (never skips) if fwknop is missing.
 */
import { createHash, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeFwknop, type FwknopKeys, fwknopReplayId, verifyFwknopHmac } from '../../spa/fwknop.ts';
import type { FwknopHashType } from '../../spa/types.ts';
import {
  type Base64Keys,
  type ClientPacketOptions,
  findTool,
  fwknopClientPacket,
  fwknopKeyGen,
  makeTempDir,
} from '../support/fwknop-tools.ts';

/** fwknop's spelling → blackcloud's (node's) spelling. */
const HASH_TYPES: readonly (readonly [string, FwknopHashType])[] = [
  ['md5', 'md5'],
  ['sha1', 'sha1'],
  ['sha256', 'sha256'],
  ['sha384', 'sha384'],
  ['sha512', 'sha512'],
  ['sha3_256', 'sha3-256'],
  ['sha3_512', 'sha3-512'],
];

let fwknop: string;
let home: string;
let b64: Base64Keys;
let keys: FwknopKeys;

function keysOf(k: Base64Keys, hmacType: FwknopHashType = 'sha256'): FwknopKeys {
  return {
    encryptionKey: new Uint8Array(Buffer.from(k.key, 'base64')),
    hmacKey: new Uint8Array(Buffer.from(k.hmacKey, 'base64')),
    hmacType,
  };
}

const client = (args: readonly string[], k: Base64Keys = b64, options: ClientPacketOptions = {}) =>
  fwknopClientPacket(fwknop, home, k, args, options);

beforeAll(async () => {
  fwknop = await findTool('fwknop');
  home = await makeTempDir('bc-fwknop-client');
  b64 = await fwknopKeyGen(fwknop, home);
  keys = keysOf(b64);
});

afterAll(async () => {
  if (home !== undefined) await rm(home, { recursive: true, force: true });
});

describe('real fwknop client → decodeFwknop', () => {
  it('decodes a default access packet (SHA-256 HMAC and digest) to every field', async () => {
    const before = Math.floor(Date.now() / 1000);
    const { wire, output } = await client(['-A', 'tcp/8883', '-a', '10.1.2.3', '-U', 'device-42']);
    const after = Math.floor(Date.now() / 1000);
    const decoded = decodeFwknop(wire, keys);
    expect(decoded.ok).toBe(true);
    if (!decoded.ok) return;
    const m = decoded.value;
    expect(m.random).toBe(/Random Value: (\d{16})/.exec(output)?.[1]);
    expect(m.username).toBe('device-42');
    expect(m.timestamp).toBeGreaterThanOrEqual(before);
    expect(m.timestamp).toBeLessThanOrEqual(after);
    expect(m.version).toBe('3.0.0');
    expect(m.messageType).toBe(1);
    expect(m.message).toBe('10.1.2.3,tcp/8883');
    expect(m.access).toEqual({ allowIp: '10.1.2.3', entries: [{ protocol: 'tcp', port: 8883 }] });
    expect(m.natAccess).toBeUndefined();
    expect(m.clientTimeout).toBeUndefined();
    expect(m.serverAuth).toBeUndefined();
    expect(m.digestType).toBe('sha256');
  });

  for (const [fwknopName, hmacType] of HASH_TYPES) {
    it(`verifies and decodes a packet with --hmac-digest-type ${fwknopName}`, async () => {
      const { wire } = await client(['-A', 'tcp/8883', '-a', '10.1.2.3', '--hmac-digest-type', fwknopName]);
      const k = keysOf(b64, hmacType);
      expect(verifyFwknopHmac(wire, k.hmacKey, hmacType)).toBe(true);
      const decoded = decodeFwknop(wire, k);
      expect(decoded.ok && decoded.value.message).toBe('10.1.2.3,tcp/8883');
      // The same packet under any other HMAC type is not authentic.
      for (const [, other] of HASH_TYPES.filter(([, t]) => t !== hmacType)) {
        expect(decodeFwknop(wire, keysOf(b64, other))).toEqual({ ok: false, reason: 'auth-failed' });
      }
    });
  }

  for (const [fwknopName, digestType] of HASH_TYPES) {
    it(`decodes a packet with --digest-type ${fwknopName} and reports ${digestType}`, async () => {
      const { wire } = await client(['-A', 'tcp/8883', '-a', '10.1.2.3', '-m', fwknopName]);
      const decoded = decodeFwknop(wire, keys);
      expect(decoded.ok && decoded.value.digestType).toBe(digestType);
    });
  }

  it('decodes several ports (-A tcp/8883,udp/5000)', async () => {
    const { wire } = await client(['-A', 'tcp/8883,udp/5000', '-a', '192.0.2.7']);
    const decoded = decodeFwknop(wire, keys);
    expect(decoded.ok && decoded.value.access).toEqual({
      allowIp: '192.0.2.7',
      entries: [
        { protocol: 'tcp', port: 8883 },
        { protocol: 'udp', port: 5000 },
      ],
    });
  });

  it("decodes -s as allow IP '0.0.0.0' (use the packet's source)", async () => {
    const { wire } = await client(['-A', 'tcp/8883', '-s']);
    const decoded = decodeFwknop(wire, keys);
    expect(decoded.ok && decoded.value.access?.allowIp).toBe('0.0.0.0');
  });

  it('decodes a client timeout (--fw-timeout 120) as type 3', async () => {
    const { wire } = await client(['-A', 'tcp/8883', '-a', '10.1.2.3', '--fw-timeout', '120']);
    const decoded = decodeFwknop(wire, keys);
    expect(decoded.ok && [decoded.value.messageType, decoded.value.clientTimeout]).toEqual([3, 120]);
  });

  it('decodes NAT access (-N host:port) as type 2, and with a timeout as type 4', async () => {
    const nat = decodeFwknop(
      (await client(['-A', 'tcp/22', '-a', '10.1.2.3', '-N', '192.168.1.5:2222'])).wire,
      keys,
    );
    expect(nat.ok && [nat.value.messageType, nat.value.natAccess]).toEqual([
      2,
      { host: '192.168.1.5', port: 2222 },
    ]);
    const natTimeout = decodeFwknop(
      (await client(['-A', 'tcp/22', '-a', '10.1.2.3', '-N', 'inner.example:2222', '-f', '300'])).wire,
      keys,
    );
    expect(natTimeout.ok && natTimeout.value).toMatchObject({
      messageType: 4,
      natAccess: { host: 'inner.example', port: 2222 },
      clientTimeout: 300,
    });
  });

  it('decodes local NAT (--nat-local) as type 5, and with --nat-port and a timeout as type 6', async () => {
    const local = decodeFwknop((await client(['-A', 'tcp/22', '-a', '10.1.2.3', '--nat-local'])).wire, keys);
    expect(local.ok && local.value).toMatchObject({
      messageType: 5,
      natAccess: { host: '127.0.0.1', port: 22 },
    });
    const localTimeout = decodeFwknop(
      (await client(['-A', 'tcp/22', '-a', '10.1.2.3', '--nat-local', '--nat-port', '4444', '-f', '60']))
        .wire,
      keys,
    );
    expect(localTimeout.ok && localTimeout.value).toMatchObject({
      messageType: 6,
      message: '10.1.2.3,tcp/4444',
      natAccess: { host: '127.0.0.1', port: 22 },
      clientTimeout: 60,
    });
  });

  it('decodes a command message (-C) as type 0 without an access list', async () => {
    const { wire } = await client(['-C', 'uptime -p', '-a', '10.1.2.3']);
    const decoded = decodeFwknop(wire, keys);
    expect(decoded.ok && decoded.value).toMatchObject({ messageType: 0, message: '10.1.2.3,uptime -p' });
    expect(decoded.ok && decoded.value.access).toBeUndefined();
  });

  it('decodes a Rijndael key given as a passphrase (--key-rijndael) and one-byte keys', async () => {
    const passphrase = 'correct horse battery';
    const fromPassphrase = await client(['-A', 'tcp/8883', '-a', '10.1.2.3'], b64, { passphrase });
    const passphraseKeys = { ...keys, encryptionKey: new TextEncoder().encode(passphrase) };
    const decoded = decodeFwknop(fromPassphrase.wire, passphraseKeys);
    expect(decoded.ok && decoded.value.message).toBe('10.1.2.3,tcp/8883');
    const short: Base64Keys = {
      key: Buffer.from('k').toString('base64'),
      hmacKey: Buffer.from('h').toString('base64'),
    };
    const packet = await client(['-A', 'tcp/8883', '-a', '10.1.2.3'], short);
    const shortDecoded = decodeFwknop(packet.wire, keysOf(short));
    expect(shortDecoded.ok && shortDecoded.value.message).toBe('10.1.2.3,tcp/8883');
  });

  it('gives the replay id fwknopd would record: SHA-256 of the payload as received', async () => {
    const { wire } = await client(['-A', 'tcp/8883', '-a', '10.1.2.3']);
    expect(fwknopReplayId(wire)).toBe(createHash('sha256').update(wire).digest('hex'));
    expect(fwknopReplayId(wire)).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('real fwknop client → rejections', () => {
  it('rejects a tampered packet (any one character changed) with auth-failed', async () => {
    const { wire } = await client(['-A', 'tcp/8883', '-a', '10.1.2.3']);
    for (const index of [0, 17, Math.floor(wire.length / 2), wire.length - 44, wire.length - 1]) {
      const tampered = wire.slice();
      tampered[index] = tampered[index] === 0x41 ? 0x42 : 0x41; // 'A' <-> 'B'
      expect(decodeFwknop(tampered, keys)).toEqual({ ok: false, reason: 'auth-failed' });
    }
  });

  it('rejects truncated packets', async () => {
    const { wire } = await client(['-A', 'tcp/8883', '-a', '10.1.2.3']);
    expect(decodeFwknop(wire.subarray(0, wire.length - 1), keys)).toEqual({
      ok: false,
      reason: 'auth-failed',
    });
    expect(decodeFwknop(wire.subarray(1), keys)).toEqual({ ok: false, reason: 'auth-failed' });
    expect(decodeFwknop(wire.subarray(0, 100), keys)).toEqual({ ok: false, reason: 'too-short' });
  });

  it('rejects a packet under the wrong HMAC key with auth-failed', async () => {
    const { wire } = await client(['-A', 'tcp/8883', '-a', '10.1.2.3']);
    const wrong = { ...keys, hmacKey: new Uint8Array(randomBytes(64)) };
    expect(decodeFwknop(wire, wrong)).toEqual({ ok: false, reason: 'auth-failed' });
    expect(verifyFwknopHmac(wire, wrong.hmacKey, 'sha256')).toBe(false);
  });

  it('rejects a packet under the wrong encryption key (HMAC right) after decryption, never as authentic', async () => {
    const other = await fwknopKeyGen(fwknop, home);
    const { wire } = await client(['-A', 'tcp/8883', '-a', '10.1.2.3'], {
      key: other.key,
      hmacKey: b64.hmacKey,
    });
    expect(verifyFwknopHmac(wire, keys.hmacKey, 'sha256')).toBe(true);
    const decoded = decodeFwknop(wire, keys);
    expect(decoded.ok).toBe(false);
    // Garbage plaintext fails strict padding (255 in 256) or the plaintext checks that follow.
    if (!decoded.ok) expect(['bad-padding', 'bad-plaintext', 'bad-fields']).toContain(decoded.reason);
  });

  it('rejects a packet made without --use-hmac', async () => {
    const withHmac = await client(['-A', 'tcp/8883', '-a', '10.1.2.3']);
    const { wire } = await client(['-A', 'tcp/8883', '-a', '10.1.2.3'], b64, { useHmac: false });
    expect(wire.length).toBe(withHmac.wire.length - 43);
    expect(decodeFwknop(wire, keys)).toEqual({ ok: false, reason: 'auth-failed' });
  });
});
