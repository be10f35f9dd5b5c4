/**
 * SPA codec throughput on one core: BC1 encode/decode and junk rejection, next to the fwknop codec's decode and
 * junk rejection (bad HMAC), and the cost of fwknop's trial HMAC over candidate keys that BC1's key id avoids
 * (with `verifyFwknopHmac` per candidate, and as the receiver does it: one frame, `decodeFwknopFrame` per candidate).
 *
 * Each row warms up, then runs the operation in batches for a fixed time budget (default 1.5 s, `--seconds N`),
 * timed with process.hrtime.bigint. Every operation's result is checked (so nothing is optimised away, and a
 * row that measures the wrong path fails loudly). Run: `npm run bench -- spa-codec`.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { cpus } from 'node:os';
import { type Bc1Payload, decodeBc1, encodeBc1 } from '../spa/bc1.ts';
import {
  decodeFwknop,
  decodeFwknopFrame,
  encodeFwknop,
  type FwknopKeys,
  readFwknopFrame,
  verifyFwknopHmac,
} from '../spa/fwknop.ts';

interface Row {
  readonly name: string;
  readonly note: string;
  readonly ops: number;
  readonly seconds: number;
}

const DEFAULT_BUDGET_SECONDS = 1.5;
const WARMUP_SECONDS = 0.2;
const BATCH = 256;
const POOL = 1024;
const FWKNOP_CANDIDATES = 10;

/** Runs `op(i)` in batches until `budget` seconds have passed; `op` returns false if its result was wrong. */
function measure(name: string, note: string, budget: number, op: (i: number) => boolean): Row {
  const runFor = (seconds: number): { ops: number; seconds: number } => {
    const limit = BigInt(Math.round(seconds * 1e9));
    const start = process.hrtime.bigint();
    let ops = 0;
    let elapsed = 0n;
    do {
      for (let j = 0; j < BATCH; j++) {
        if (!op(ops + j))
          throw new Error(`bench row "${name}": operation ${ops + j} gave an unexpected result`);
      }
      ops += BATCH;
      elapsed = process.hrtime.bigint() - start;
    } while (elapsed < limit);
    return { ops, seconds: Number(elapsed) / 1e9 };
  };
  runFor(WARMUP_SECONDS);
  const { ops, seconds } = runFor(budget);
  return { name, note, ops, seconds };
}

const rate = (row: Row): number => row.ops / row.seconds;
const thousands = (n: number): string => Math.round(n).toLocaleString('en-US');

function printTable(rows: readonly Row[]): void {
  const header = ['operation', 'ops/s', 'µs/op', 'ops', 'note'];
  const lines = rows.map((row) => [
    row.name,
    thousands(rate(row)),
    (1e6 / rate(row)).toFixed(2),
    thousands(row.ops),
    row.note,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((line) => line[i]!.length)));
  const format = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (i === 1 || i === 2 || i === 3 ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ');
  console.log(format(header).trimEnd());
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const line of lines) console.log(format(line).trimEnd());
}

function parseBudget(args: readonly string[]): number {
  const at = args.indexOf('--seconds');
  if (at < 0) return DEFAULT_BUDGET_SECONDS;
  const value = Number(args[at + 1]);
  if (!Number.isFinite(value) || value <= 0 || value > 60) {
    throw new RangeError(
      `--seconds: received ${String(args[at + 1])}; expected a number of seconds in (0, 60]`,
    );
  }
  return value;
}

export async function main(args: readonly string[] = []): Promise<void> {
  const budget = parseBudget(args);
  const now = Date.now();

  // --- BC1 -------------------------------------------------------------------------------------
  const key = new Uint8Array(randomBytes(32));
  const keyId = 0x0001_0203;
  const onePort: Bc1Payload = {
    timestampMs: now,
    durationSeconds: 0,
    access: [{ protocol: 'tcp', port: 8883 }],
  };
  const largest: Bc1Payload = {
    timestampMs: now,
    durationSeconds: 60,
    access: Array.from({ length: 8 }, (_, i) => ({ protocol: i % 2 ? 'udp' : 'tcp', port: 8000 + i })),
    claimedSource: { family: 6, address: '2001:db8:85a3::8a2e:370:7334' },
  };
  const nonces = Array.from({ length: POOL }, () => new Uint8Array(randomBytes(12)));
  const bc1Packets = nonces.map((nonce) => encodeBc1(onePort, { keyId, key, nonce }));
  const bc1Largest = nonces.map((nonce) => encodeBc1(largest, { keyId, key, nonce }));
  const wrongMagic = bc1Packets.map((packet) => {
    const copy = packet.slice();
    copy[0] = 0x00;
    return copy;
  });
  const badTag = bc1Packets.map((packet) => {
    const copy = packet.slice();
    copy[copy.length - 1] = copy[copy.length - 1]! ^ 0x01;
    return copy;
  });

  // --- fwknop ----------------------------------------------------------------------------------
  const keys: FwknopKeys = {
    encryptionKey: new Uint8Array(randomBytes(32)),
    hmacKey: new Uint8Array(randomBytes(64)),
    hmacType: 'sha256',
  };
  const randomDigits = (): string => Array.from({ length: 16 }, () => randomInt(10)).join('');
  const fwknopPackets = Array.from({ length: POOL }, () =>
    encodeFwknop(
      {
        username: 'device-0001',
        timestamp: Math.floor(now / 1000),
        messageType: 1,
        message: '0.0.0.0,tcp/8883',
      },
      keys,
      { salt: new Uint8Array(randomBytes(8)), random: randomDigits() },
    ),
  );
  const fwknopBadHmac = fwknopPackets.map((packet) => {
    const copy = packet.slice();
    const last = copy.length - 1;
    copy[last] = copy[last] === 0x41 ? 0x42 : 0x41; // another base64 character: same shape, wrong HMAC
    return copy;
  });
  const candidateKeys = Array.from({ length: FWKNOP_CANDIDATES }, () => new Uint8Array(randomBytes(64)));
  /** The receiver's trial: the wrong candidates first, the packet's own keys last. */
  const candidateTrial: readonly FwknopKeys[] = [
    ...candidateKeys.map((hmacKey) => ({ ...keys, hmacKey })),
    keys,
  ];
  const sizes = {
    bc1: bc1Packets[0]!.length,
    bc1Largest: bc1Largest[0]!.length,
    fwknop: fwknopPackets[0]!.length,
  };

  const at = (i: number): number => i & (POOL - 1);
  const rows: Row[] = [
    measure('BC1 encode', `1 port, ${sizes.bc1} B`, budget, (i) => {
      return encodeBc1(onePort, { keyId, key, nonce: nonces[at(i)]! }).length === sizes.bc1;
    }),
    measure(
      'BC1 decode (valid)',
      `1 port, ${sizes.bc1} B`,
      budget,
      (i) => decodeBc1(bc1Packets[at(i)]!, key).ok,
    ),
    measure(
      'BC1 decode (valid, largest)',
      `8 ports + IPv6 claim, ${sizes.bc1Largest} B`,
      budget,
      (i) => decodeBc1(bc1Largest[at(i)]!, key).ok,
    ),
    measure('BC1 junk: wrong magic', 'bad-magic, no crypto', budget, (i) => {
      const result = decodeBc1(wrongMagic[at(i)]!, key);
      return !result.ok && result.reason === 'bad-magic';
    }),
    measure('BC1 junk: bad tag', 'auth-failed, one AEAD open', budget, (i) => {
      const result = decodeBc1(badTag[at(i)]!, key);
      return !result.ok && result.reason === 'auth-failed';
    }),
    measure('fwknop decode (valid)', `1 port, ${sizes.fwknop} B, HMAC-SHA256`, budget, (i) => {
      return decodeFwknop(fwknopPackets[at(i)]!, keys).ok;
    }),
    measure('fwknop junk: bad HMAC', 'auth-failed, one HMAC', budget, (i) => {
      const result = decodeFwknop(fwknopBadHmac[at(i)]!, keys);
      return !result.ok && result.reason === 'auth-failed';
    }),
    measure(
      `fwknop junk: ${FWKNOP_CANDIDATES} candidates`,
      'trial HMAC over candidate keys (no key id)',
      budget,
      (i) => {
        const wire = fwknopBadHmac[at(i)]!;
        for (const hmacKey of candidateKeys) if (verifyFwknopHmac(wire, hmacKey, 'sha256')) return false;
        return true;
      },
    ),
    measure(
      `fwknop junk: ${FWKNOP_CANDIDATES} candidates, one frame`,
      'receiver path: 1 shape check, 1 HMAC per candidate',
      budget,
      (i) => {
        const frame = readFwknopFrame(fwknopBadHmac[at(i)]!);
        if (!frame.ok) return false;
        for (const candidate of candidateTrial.slice(0, FWKNOP_CANDIDATES)) {
          if (decodeFwknopFrame(frame.value, candidate).ok) return false;
        }
        return true;
      },
    ),
    measure(
      `fwknop valid: last of ${FWKNOP_CANDIDATES + 1} candidates`,
      `receiver path: 1 shape check, ${FWKNOP_CANDIDATES + 1} HMACs, 1 decryption`,
      budget,
      (i) => {
        const frame = readFwknopFrame(fwknopPackets[at(i)]!);
        if (!frame.ok) return false;
        for (const candidate of candidateTrial) {
          const decoded = decodeFwknopFrame(frame.value, candidate);
          if (decoded.ok) return candidate === keys;
        }
        return false;
      },
    ),
  ];

  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  console.log(`SPA codec throughput, one core (node ${process.version}, ${cpu}), ${budget} s per row\n`);
  printTable(rows);
  const byName = (name: string): number => rate(rows.find((row) => row.name === name)!);
  const bc1Decode = byName('BC1 decode (valid)');
  const fwknopDecode = byName('fwknop decode (valid)');
  console.log(
    `\nsummary: BC1 decodes ${thousands(bc1Decode)}/s (${sizes.bc1} B), fwknop ${thousands(fwknopDecode)}/s ` +
      `(${sizes.fwknop} B): ${(bc1Decode / fwknopDecode).toFixed(1)}x; junk rejected: BC1 bad tag ` +
      `${thousands(byName('BC1 junk: bad tag'))}/s, fwknop bad HMAC ${thousands(byName('fwknop junk: bad HMAC'))}/s ` +
      `(${thousands(byName(`fwknop junk: ${FWKNOP_CANDIDATES} candidates`))}/s over ${FWKNOP_CANDIDATES} candidate keys)`,
  );
}
