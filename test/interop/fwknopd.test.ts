/**
 * Interop, direction 2: packets from blackcloud's encodeFwknop are accepted by the REAL fwknopd 2.6.10 (UDP server
 * mode) in a private network namespace this file creates: every HMAC type (one access.conf stanza each, as
 * fwknopd tries every stanza in turn), every digest type, every message type; fwknopd's decoded fields equal what
 * we encoded. Wrong keys and stale timestamps are rejected by it. Without -t, it records our replay id (base64)
 * and detects the replay. Fails (never skips) if fwknopd, fwknop or ip is missing.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFwknop, type FwknopKeys, type FwknopMessageInput, fwknopReplayId } from '../../spa/fwknop.ts';
import type { FwknopHashType } from '../../spa/types.ts';
import {
  type Base64Keys,
  Fwknopd,
  type FwknopdStanza,
  findTool,
  fwknopClientPacket,
  fwknopKeyGen,
  makeTempDir,
  NetworkNamespace,
  parseDecodeDump,
} from '../support/fwknop-tools.ts';

/** blackcloud's hash name → fwknopd's HMAC_DIGEST_TYPE spelling and the name its dump prints. */
const HASH_TYPES: readonly (readonly [FwknopHashType, string, string])[] = [
  ['sha256', 'sha256', 'SHA256'],
  ['md5', 'md5', 'MD5'],
  ['sha1', 'sha1', 'SHA1'],
  ['sha384', 'sha384', 'SHA384'],
  ['sha512', 'sha512', 'SHA512'],
  ['sha3-256', 'sha3_256', 'SHA3_256'],
  ['sha3-512', 'sha3_512', 'SHA3_512'],
];

/** Our encoder's golden vectors (test/fixtures/fwknop-vectors.json), with the fixture's test keys. */
const fixture = JSON.parse(
  readFileSync(new URL('../fixtures/fwknop-vectors.json', import.meta.url), 'utf8'),
) as {
  keys: Base64Keys;
  encoderVectors: { name: string; hmacType: FwknopHashType; random: string; wire: string }[];
};
/** Stanzas #8 and #9: the fixture keys with a SHA-256 and a SHA-512 HMAC. */
const FIXTURE_STANZAS: readonly (readonly [FwknopHashType, string])[] = [
  ['sha256', 'sha256'],
  ['sha512', 'sha512'],
];
const STANZA_COUNT = 7 + FIXTURE_STANZAS.length;

let fwknop: string;
let fwknopd: string;
let home: string;
let ns: NetworkNamespace | undefined;
let server: Fwknopd | undefined;
/** One key pair per stanza; stanza #i+1 uses HASH_TYPES[i]'s HMAC type. */
const stanzaKeys: Base64Keys[] = [];

function keysOf(k: Base64Keys, hmacType: FwknopHashType): FwknopKeys {
  return {
    encryptionKey: new Uint8Array(Buffer.from(k.key, 'base64')),
    hmacKey: new Uint8Array(Buffer.from(k.hmacKey, 'base64')),
    hmacType,
  };
}

function rand() {
  const random = Array.from({ length: 16 }, () => randomInt(10)).join('');
  return { salt: new Uint8Array(randomBytes(8)), random };
}

const now = () => Math.floor(Date.now() / 1000);

function access(overrides: Partial<FwknopMessageInput> = {}): FwknopMessageInput {
  return {
    username: 'device-7',
    timestamp: now(),
    messageType: 1,
    message: '127.0.0.1,tcp/8883',
    ...overrides,
  };
}

/** Send one datagram and return fwknopd's log for it, up to `until`. */
async function send(target: Fwknopd, wire: Uint8Array, until: RegExp): Promise<string> {
  const from = target.mark();
  await ns!.sendUdp(target.port, wire);
  return target.waitFor(until, from);
}

const ACCEPTED = /SPA Decode \(res=0\):[\s\S]*?\n\s*\n/;
/** Each stanza logs its own error; the last stanza's line ends the packet's processing. */
const lastStanzaError = (n: number) =>
  new RegExp(`\\(stanza #${n}\\) (?:Error creating fko context|SPA data time)`);

beforeAll(async () => {
  fwknop = await findTool('fwknop');
  fwknopd = await findTool('fwknopd');
  const ip = await findTool('ip');
  home = await makeTempDir('bc-fwknopd-keys');
  for (let i = 0; i < HASH_TYPES.length; i++) stanzaKeys.push(await fwknopKeyGen(fwknop, home));
  ns = await NetworkNamespace.create(ip, 'fwkd');
  const stanzas: FwknopdStanza[] = [
    ...HASH_TYPES.map(([, fwknopName], i) => ({ keys: stanzaKeys[i]!, hmacDigestType: fwknopName })),
    ...FIXTURE_STANZAS.map(([, fwknopName]) => ({ keys: fixture.keys, hmacDigestType: fwknopName })),
  ];
  expect(stanzas).toHaveLength(STANZA_COUNT);
  server = await Fwknopd.start({ fwknopd, namespace: ns, stanzas, testMode: true });
});

afterAll(async () => {
  await server?.stop();
  await ns?.remove();
  if (home !== undefined) await rm(home, { recursive: true, force: true });
});

describe('encodeFwknop → real fwknopd (-t, in a private network namespace)', () => {
  it('control: fwknopd accepts a packet from the real fwknop client', async () => {
    const { wire } = await fwknopClientPacket(fwknop, home, stanzaKeys[0]!, [
      '-A',
      'tcp/8883',
      '-a',
      '127.0.0.1',
    ]);
    const log = await send(server!, wire, ACCEPTED);
    expect(log).toMatch(/\(stanza #1\) SPA Decode \(res=0\)/);
  });

  it('accepts an access packet and decodes every field to what we encoded', async () => {
    const r = rand();
    const input = access();
    const wire = encodeFwknop(input, keysOf(stanzaKeys[0]!, 'sha256'), r);
    const log = await send(server!, wire, ACCEPTED);
    expect(log).toContain(`SPA Packet: '${Buffer.from(wire).toString()}'`);
    expect(log).toMatch(/\(stanza #1\) SPA Decode \(res=0\)/);
    const dump = parseDecodeDump(log);
    expect(dump).toMatchObject({
      'Random Value': r.random,
      Username: 'device-7',
      Timestamp: String(input.timestamp),
      'FKO Version': '3.0.0',
      'Message Type': '1 (Access msg)',
      'Message String': '127.0.0.1,tcp/8883',
      'Nat Access': '<NULL>',
      'Server Auth': '<NULL>',
      'Client Timeout': '0',
      'Digest Type': '3 (SHA256)',
      'HMAC Type': '3 (SHA256)',
    });
  });

  HASH_TYPES.forEach(([hmacType, , dumpName], i) => {
    it(`accepts our ${hmacType} HMAC (stanza #${i + 1}, HMAC_DIGEST_TYPE ${HASH_TYPES[i]![1]})`, async () => {
      const wire = encodeFwknop(access(), keysOf(stanzaKeys[i]!, hmacType), rand());
      const log = await send(server!, wire, ACCEPTED);
      expect(log).toMatch(new RegExp(`\\(stanza #${i + 1}\\) SPA Decode \\(res=0\\)`));
      expect(parseDecodeDump(log)['HMAC Type']).toMatch(new RegExp(`\\(${dumpName}\\)$`));
    });
  });

  for (const [digestType, , dumpName] of HASH_TYPES) {
    it(`accepts our ${digestType} inner digest`, async () => {
      const wire = encodeFwknop(access({ digestType }), keysOf(stanzaKeys[0]!, 'sha256'), rand());
      const log = await send(server!, wire, ACCEPTED);
      expect(parseDecodeDump(log)['Digest Type']).toMatch(new RegExp(`\\(${dumpName}\\)$`));
    });
  }

  it('accepts several ports and a client timeout (type 3)', async () => {
    const input = access({ messageType: 3, message: '0.0.0.0,tcp/8883,udp/5000', clientTimeout: 120 });
    const log = await send(server!, encodeFwknop(input, keysOf(stanzaKeys[0]!, 'sha256'), rand()), ACCEPTED);
    expect(parseDecodeDump(log)).toMatchObject({
      'Message Type': '3 (Client timeout access msg)',
      'Message String': '0.0.0.0,tcp/8883,udp/5000',
      'Client Timeout': '120',
    });
  });

  const natCases: readonly (readonly [string, Partial<FwknopMessageInput>, Record<string, string>])[] = [
    [
      'NAT access (type 2)',
      { messageType: 2, natAccess: { host: '192.168.1.5', port: 2222 } },
      { 'Message Type': '2 (NAT access msg)', 'Nat Access': '192.168.1.5,2222' },
    ],
    [
      'NAT access with a timeout (type 4)',
      { messageType: 4, natAccess: { host: 'inner.example', port: 22 }, clientTimeout: 60 },
      {
        'Message Type': '4 (Client timeout NAT access msg)',
        'Nat Access': 'inner.example,22',
        'Client Timeout': '60',
      },
    ],
    [
      'local NAT (type 5)',
      { messageType: 5, natAccess: { host: '127.0.0.1', port: 22 } },
      { 'Message Type': '5 (Local NAT access msg)', 'Nat Access': '127.0.0.1,22' },
    ],
    [
      'local NAT with a timeout (type 6)',
      { messageType: 6, natAccess: { host: '127.0.0.1', port: 22 }, clientTimeout: 45 },
      { 'Message Type': '6 (Client timeout local NAT access msg)', 'Client Timeout': '45' },
    ],
    [
      'a command (type 0)',
      { messageType: 0, message: '127.0.0.1,uptime' },
      { 'Message Type': '0 (Command msg)', 'Message String': '127.0.0.1,uptime' },
    ],
    [
      'a server_auth field',
      { serverAuth: 'opensesame' },
      { 'Message Type': '1 (Access msg)', 'Server Auth': 'opensesame' },
    ],
    [
      'a server_auth field with a client timeout',
      { messageType: 3, serverAuth: 'opensesame', clientTimeout: 30 },
      { 'Server Auth': 'opensesame', 'Client Timeout': '30' },
    ],
  ];
  for (const [name, overrides, expected] of natCases) {
    it(`decodes ${name} as we encoded it`, async () => {
      const wire = encodeFwknop(access(overrides), keysOf(stanzaKeys[0]!, 'sha256'), rand());
      const log = await send(server!, wire, ACCEPTED);
      expect(parseDecodeDump(log)).toMatchObject(expected);
    });
  }

  it('rejects our packet under a wrong HMAC key (FKO_ERROR_INVALID_DATA_HMAC_COMPAREFAIL)', async () => {
    const wrong = { ...keysOf(stanzaKeys[0]!, 'sha256'), hmacKey: new Uint8Array(randomBytes(64)) };
    const log = await send(server!, encodeFwknop(access(), wrong, rand()), lastStanzaError(STANZA_COUNT));
    expect(log).toMatch(
      /\(stanza #1\) Error creating fko context: .*FKO_ERROR_INVALID_DATA_HMAC_COMPAREFAIL/,
    );
    expect(log).not.toMatch(/SPA Decode \(res=0\)/);
  });

  it('rejects our packet under a wrong encryption key with the right HMAC key (decryption fails)', async () => {
    const wrong = { ...keysOf(stanzaKeys[0]!, 'sha256'), encryptionKey: new Uint8Array(randomBytes(32)) };
    const log = await send(server!, encodeFwknop(access(), wrong, rand()), lastStanzaError(STANZA_COUNT));
    expect(log).toMatch(/\(stanza #1\) Error creating fko context: Decryption failed/);
    expect(log).not.toMatch(/SPA Decode \(res=0\)/);
  });

  for (const vector of fixture.encoderVectors) {
    it(`decodes our golden vector ${vector.name} (then refuses it only for its age)`, async () => {
      const stanza = 8 + FIXTURE_STANZAS.findIndex(([type]) => type === vector.hmacType);
      const log = await send(
        server!,
        new TextEncoder().encode(vector.wire),
        /SPA data time difference is too great/,
      );
      expect(log).toMatch(new RegExp(`\\(stanza #${stanza}\\) SPA Decode \\(res=0\\)`));
      expect(parseDecodeDump(log)['Random Value']).toBe(vector.random);
    });
  }

  it('rejects our packet with a timestamp 300 s old (its clock window is 120 s)', async () => {
    const wire = encodeFwknop(access({ timestamp: now() - 300 }), keysOf(stanzaKeys[0]!, 'sha256'), rand());
    const log = await send(server!, wire, /SPA data time difference is too great/);
    expect(log).toMatch(/time difference is too great \(30\d seconds\)/);
  });
});

describe('encodeFwknop → real fwknopd without -t (firewall changes stay in the namespace)', () => {
  let live: Fwknopd | undefined;

  beforeAll(async () => {
    live = await Fwknopd.start({
      fwknopd,
      namespace: ns!,
      stanzas: [{ keys: stanzaKeys[0]!, hmacDigestType: 'sha256' }],
      testMode: false,
    });
  });

  afterAll(async () => {
    await live?.stop();
  });

  it('opens for our packet, records our replay id, and detects the replay', async () => {
    const wire = encodeFwknop(access(), keysOf(stanzaKeys[0]!, 'sha256'), rand());
    const first = await send(live!, wire, /Added access rule to FWKNOP_INPUT for 127\.0\.0\.1/);
    expect(first).toMatch(/SPA Decode \(res=0\)/);

    const cache = await readFile(live!.digestFile, 'utf8');
    const recorded = Buffer.from(fwknopReplayId(wire), 'hex').toString('base64').replace(/=+$/, '');
    expect(cache.split('\n').map((line) => line.split(' ')[0])).toContain(recorded);

    const second = await send(live!, wire, /Replay detected from source IP: 127\.0\.0\.1/);
    expect(second).not.toMatch(/SPA Decode \(res=0\)/);
  });
});
