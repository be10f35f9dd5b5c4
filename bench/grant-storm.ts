/**
 * A reconnect storm against the AWS firewall adapter: 10,000 devices knocking within 10 s (arrivals spread evenly)
 * through SecurityGroupFirewall on the modelled EC2 API (bench/support/modelled-ec2.ts). Prints API calls, the
 * largest backlog and slot queue, the time until the last grant is open, and errors (target: none).
 * Two rows: (1) the quota lifted in the model (every grant fits: the API cost alone); (2) EC2's real default quota,
 * 5 groups x 60 rules, where grants beyond the free slots must wait in the queue for slots (the bench stops
 * waiting after `--deadline` s and counts them as queued, not as errors).
 * Run: `npm run bench -- grant-storm [--devices N] [--seconds S] [--latency MS] [--deadline S]`.
 */
import { cpus } from 'node:os';
import { callsText, type GrantLoadResult, runGrantLoad } from './support/grant-load.ts';
import { numberOption, printTable, thousands } from './support/table.ts';

export async function main(args: readonly string[] = []): Promise<void> {
  const devices = numberOption(args, 'devices', 10_000, 1, 100_000);
  const seconds = numberOption(args, 'seconds', 10, 0, 600);
  const latencyMs = numberOption(args, 'latency', 30, 0, 5000);
  const deadline = numberOption(args, 'deadline', 5, 1, 600);
  console.log(
    `Grant storm: ${thousands(devices)} devices knocking within ${seconds} s -> SecurityGroupFirewall -> modelled ` +
      `EC2 (${latencyMs} ms round trip, Authorize/Revoke buckets 50 + 5/s; node ${process.version}, ` +
      `${cpus().length} x ${cpus()[0]?.model.trim() ?? 'unknown CPU'})\n`,
  );
  const scenarios = [
    { name: 'quota lifted (10 x 1,000)', groups: 10, rulesPerGroup: 1000 },
    { name: 'EC2 default (5 x 60)', groups: 5, rulesPerGroup: 60 },
  ];
  const results: [string, GrantLoadResult][] = [];
  for (const s of scenarios) {
    const r = await runGrantLoad({
      devices,
      spreadMs: seconds * 1000,
      groups: s.groups,
      rulesPerGroup: s.rulesPerGroup,
      latencyMs,
      deadlineMs: deadline * 1000,
    });
    results.push([s.name, r]);
  }
  printTable(
    [
      'quota',
      'opened',
      'queued at end',
      'errors',
      'EC2 calls',
      'by API',
      'throttled',
      'quota errs',
      'largest backlog',
      'slot queue',
      'last open (s)',
    ],
    results.map(([name, r]) => [
      name,
      thousands(r.opened),
      thousands(r.pendingAtDeadline),
      r.failed,
      r.totalCalls,
      callsText(r.calls),
      r.throttled,
      r.quotaErrors,
      thousands(r.largestBacklog),
      thousands(r.largestSlotQueue),
      (r.lastOpenMs / 1000).toFixed(2),
    ]),
  );
  const [, lifted] = results[0]!;
  const [, real] = results[1]!;
  console.log(
    `\nsummary: ${thousands(lifted.opened)}/${thousands(devices)} grants open ${(lifted.lastOpenMs / 1000).toFixed(2)} s ` +
      `after the first knock with ${lifted.totalCalls} EC2 calls and ${lifted.failed} errors; at EC2's default quota ` +
      `${thousands(real.opened)} open, ${thousands(real.pendingAtDeadline)} queued for a slot, ${real.failed} errors`,
  );
}
