/**
 * EC2 API calls and time for 100, 1,000 and 10,000 simultaneous knocks through the AWS firewall adapter
 * (SecurityGroupFirewall: coalescing, planning, retry), against the modelled EC2 API (bench/support/modelled-ec2.ts:
 * request token buckets, rule quota, a round trip of `--latency` ms). Issue 5's acceptance figure.
 * Run: `npm run bench -- grant-coalescing [--latency MS] [--rules-per-group N] [--groups N]`.
 * The rule quota is lifted in the model by default (10 groups x 1,000 rules) so that every grant can be open at
 * once and the figures show the API cost alone; the real EC2 limit (rules x groups <= 1,000 per interface) and
 * the queue it causes are what bench/grant-storm.ts shows in its second row.
 */
import { cpus } from 'node:os';
import { callsText, runGrantLoad } from './support/grant-load.ts';
import { numberOption, printTable, thousands } from './support/table.ts';

export async function main(args: readonly string[] = []): Promise<void> {
  const latencyMs = numberOption(args, 'latency', 30, 0, 5000);
  const groups = numberOption(args, 'groups', 10, 1, 16);
  const rulesPerGroup = numberOption(args, 'rules-per-group', 1000, 1, 1000);
  console.log(
    `Grant coalescing: simultaneous knocks -> SecurityGroupFirewall -> modelled EC2 (${latencyMs} ms round trip, ` +
      `Authorize/Revoke buckets 50 + 5/s, ${groups} groups x ${rulesPerGroup} rules; node ${process.version}, ` +
      `${cpus().length} x ${cpus()[0]?.model.trim() ?? 'unknown CPU'})\n`,
  );
  const rows: (string | number)[][] = [];
  const results = [];
  for (const devices of [100, 1000, 10_000]) {
    const r = await runGrantLoad({
      devices,
      spreadMs: 0,
      groups,
      rulesPerGroup,
      latencyMs,
      deadlineMs: 120_000,
    });
    results.push(r);
    rows.push([
      thousands(devices),
      r.totalCalls,
      callsText(r.calls),
      (devices / Math.max(1, r.calls.AuthorizeSecurityGroupIngress ?? 0)).toFixed(1),
      r.throttled,
      r.largestCall,
      thousands(r.largestBacklog),
      r.largestSlotQueue,
      (r.lastOpenMs / 1000).toFixed(2),
      r.failed,
    ]);
  }
  printTable(
    [
      'knocks',
      'EC2 calls',
      'by API',
      'grants/Authorize',
      'throttled',
      'largest call',
      'largest backlog',
      'slot queue',
      'last open (s)',
      'errors',
    ],
    rows,
  );
  const big = results[results.length - 1]!;
  console.log(
    `\nsummary: 10,000 simultaneous knocks opened with ${big.totalCalls} EC2 calls ` +
      `(${big.calls.AuthorizeSecurityGroupIngress ?? 0} Authorize, ${big.throttled} throttled and retried), ` +
      `last grant open after ${(big.lastOpenMs / 1000).toFixed(2)} s, ${big.failed} errors`,
  );
}
