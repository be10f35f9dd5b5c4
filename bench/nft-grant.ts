/**
 * The cost of one nftables grant, side by side in one run: one `nft -f -` process per grant (the firewall before
 * the session) against the firewall's long-lived `nft -i` session (functions/local/nftables-session.ts).
 *
 * Rows: grants one after the other (latency of `allow` as the receiver awaits it: p50/p99), and, for the session,
 * `--grants N` allows issued at once (pipelined; grants/s). Each grant is a fresh address on one guarded port, so
 * the set grows as in a real run. Needs root and `nft`; the table (random name, guarding an unused port on this
 * host) is deleted at the end. Run: `npm run bench -- nft-grant [--grants N]`.
 */
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import type { Grant } from '../functions/core/interfaces.ts';
import {
  type NftablesFirewall,
  type NftRun,
  nftCommand,
  startNftablesFirewall,
} from '../functions/local/nftables-firewall.ts';
import { numberOption, printTable } from './support/table.ts';

const GUARDED_PORT = 65_431;

let addressCounter = 0;
function nextGrant(): Grant {
  addressCounter += 1;
  const now = Date.now();
  return {
    deviceId: `bench-${addressCounter}`,
    address: `10.${(addressCounter >> 16) & 255}.${(addressCounter >> 8) & 255}.${addressCounter & 255}`,
    family: 4,
    access: [{ protocol: 'tcp', port: GUARDED_PORT }],
    openedAt: now,
    expiresAt: now + 120_000,
  };
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

async function sequential(fw: NftablesFirewall, count: number) {
  const times: number[] = [];
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await fw.allow([nextGrant()]);
    times.push(performance.now() - t);
  }
  const seconds = (performance.now() - start) / 1000;
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99), perSecond: count / seconds };
}

async function pipelined(fw: NftablesFirewall, count: number) {
  const start = performance.now();
  await Promise.all(Array.from({ length: count }, () => fw.allow([nextGrant()])));
  const ms = performance.now() - start;
  return { perGrantMs: ms / count, perSecond: count / (ms / 1000) };
}

export async function main(args: readonly string[] = []): Promise<void> {
  const grants = numberOption(args, 'grants', 2000, 10, 100_000);
  const command = nftCommand();
  const perProcess: NftRun = (a, stdin) => command(a, stdin); // no openSession: one nft per batch
  const start = (run: NftRun) =>
    startNftablesFirewall({
      table: `bcgrant${randomBytes(3).toString('hex')}`,
      ports: [{ protocol: 'tcp', port: GUARDED_PORT }],
      run,
    });

  const rows: (string | number)[][] = [];
  const processCount = Math.min(grants, 200);
  const oneShot = await start(perProcess);
  try {
    const r = await sequential(oneShot, processCount);
    rows.push([
      'nft -f - per grant',
      'one after the other',
      processCount,
      r.p50,
      r.p99,
      Math.round(r.perSecond),
    ]);
  } finally {
    await oneShot.close();
  }
  const session = await start(command);
  try {
    const r = await sequential(session, grants);
    rows.push(['nft -i session', 'one after the other', grants, r.p50, r.p99, Math.round(r.perSecond)]);
    const p = await pipelined(session, grants);
    rows.push(['nft -i session', `${grants} at once`, grants, '-', '-', Math.round(p.perSecond)]);
  } finally {
    await session.close();
  }
  console.log(
    `nftables grant cost: one nft process per grant vs one nft session (node ${process.version}, ` +
      `${cpus().length} x ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, load average ${loadavg()[0]!.toFixed(2)})`,
  );
  printTable(['path', 'grants issued', 'grants', 'p50 ms', 'p99 ms', 'grants/s'], rows);
  const [before, after] = [rows[0], rows[1]];
  console.log(
    `summary: an nftables grant p50 ${Number(before?.[3]).toFixed(2)} ms with a process per grant, ` +
      `${Number(after?.[3]).toFixed(2)} ms through the session (${(Number(before?.[3]) / Number(after?.[3])).toFixed(1)}x)`,
  );
}
