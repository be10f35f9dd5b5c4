/**
 * How many concurrent mutual-TLS MQTT sessions one real Mosquitto 2.0.11 holds here, and at what cost
 * (bench/broker/session-bench.ts does the work; docs/scaling.md "The broker tier" reads the figures): Mosquitto's
 * RSS per step and per session, its CPU per 1,000 held sessions (keepalive plus a trickle of QoS 1 telemetry),
 * a probe's CONNACK latency while they are held, CPU per QoS 1 message, and a reconnect storm (connects/s with
 * TLS handshakes, CONNACK p50/p99, CPU per connect); the step where it degrades, the limits met, the machine.
 *
 * Run: `npm run bench -- broker-sessions [--sessions N] [--step N] [--keepalive S] [--telemetry-per-min N]
 *   [--workers N] [--sessions-per-address N] [--steady-s S] [--connect-concurrency N] [--storm-concurrency N]
 *   [--connack-p99-ms MS] [--probe N] [--connect-timeout-ms MS] [--broker-nofile N] [--cache-dir DIR]`. Needs mosquitto and prlimit (util-linux); root to raise
 * the descriptor limit past the hard limit. The first run issues one certificate per session (~7 ms each) into
 * the cache directory; later runs reuse them.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FileLimits } from './broker/process-stats.ts';
import { runSessionBench, type SessionBenchReport } from './broker/session-bench.ts';
import { formatNumber, numberOption, printTable, thousands } from './support/table.ts';

const MiB = 2 ** 20;

function stringOption(args: readonly string[], name: string, fallback: string): string {
  const at = args.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = args[at + 1];
  if (value === undefined || value.startsWith('--')) throw new RangeError(`--${name}: expected a value`);
  return value;
}

const limitText = (limits: FileLimits): string =>
  limits.soft === limits.hard ? String(limits.soft) : `${limits.soft} (hard ${limits.hard})`;

const errorsText = (errors: Record<string, number>): string =>
  Object.entries(errors)
    .map(([message, n]) => `${n} x ${message}`)
    .join('; ') || '0';

export function printReport(
  report: SessionBenchReport,
  options: { keepalive: number; telemetry: number },
): void {
  const m = report.machine;
  console.log(
    `broker-sessions: Mosquitto ${report.mosquittoVersion}, dynamic security, mutual TLS (ECDSA P-256, one certificate ` +
      `per device), keepalive ${options.keepalive} s, ${options.telemetry} QoS 1 message(s) per device per minute\n` +
      `machine: ${m.cores} x ${m.cpuModel}, ${m.memoryGiB.toFixed(1)} GiB (${m.freeGiB.toFixed(1)} GiB free at the ` +
      `end), Linux ${m.kernel}, node ${m.node}; clients, broker and other jobs share the cores\n` +
      `/proc/loadavg before: ${report.loadBefore}; after: ${report.loadAfter}\n`,
  );
  printTable(
    [
      'target',
      'held',
      'broker',
      'addrs',
      'ramp conn/s',
      'ramp p50/p99 ms',
      'errors',
      'overflows',
      'ramp CPU ms/conn',
      'RSS MiB',
      'CPU %',
      'CPU %/1k',
      'msgs/acked',
      'probe p50/p99 ms',
      'client CPU %',
      'client RSS MiB',
      'verdict',
    ],
    [
      [
        0,
        0,
        0,
        0,
        '-',
        '-',
        '0',
        '-',
        '-',
        formatNumber(report.baseline.rssBytes / MiB, 1),
        formatNumber(report.baseline.cpuPercent, 2),
        '-',
        '-',
        '-',
        '-',
        '-',
        'baseline',
      ],
      ...report.steps.map((s) => [
        s.target,
        s.held,
        s.brokerSessions,
        s.sourceAddresses,
        formatNumber(s.rampConnectsPerSecond, 0),
        `${s.ramp.p50.toFixed(0)} / ${s.ramp.p99.toFixed(0)}`,
        errorsText(s.connectErrors),
        String(s.rampListenOverflows),
        formatNumber(s.rampMosquittoCpuMsPerConnect, 2),
        formatNumber(s.rssBytes / MiB, 1),
        formatNumber(s.mosquittoCpuPercent, 2),
        formatNumber(s.cpuPercentPer1000, 3),
        `${s.telemetryPublished}/${s.telemetryAcked}`,
        `${s.probe.p50.toFixed(1)} / ${s.probe.p99.toFixed(1)}`,
        formatNumber(s.clientCpuPercent, 1),
        formatNumber(s.clientRssBytes / MiB, 0),
        s.degraded ?? 'held',
      ]),
    ],
  );
  const last = report.steps.filter((s) => s.degraded === undefined).at(-1);
  const lines = [
    '',
    `sessions held (steady, every one): ${thousands(report.maxHeld)}` +
      (report.degradedAt === undefined
        ? ' (the largest step asked for: not degraded)'
        : `; degraded at ${thousands(report.degradedAt.target)}: ${report.degradedAt.reason}`),
    `Mosquitto memory per session (slope of RSS over sessions): ${formatNumber(report.memoryPerSessionBytes / 1024, 1)} KiB`,
    last === undefined
      ? 'Mosquitto CPU per 1,000 held sessions: not measured (no clean step)'
      : `Mosquitto CPU per 1,000 held sessions (keepalive + telemetry, at ${thousands(last.held)}): ` +
        `${formatNumber(last.cpuPercentPer1000, 3)} % of one core (idle broker ${formatNumber(report.baseline.cpuPercent, 2)} %)`,
  ];
  if (report.burst !== undefined) {
    const b = report.burst;
    lines.push(
      `burst: ${thousands(b.messages)} QoS 1 messages at once in ${b.seconds.toFixed(2)} s, ${b.failed} failed, ` +
        `${thousands(b.delivered)} delivered to the backend; Mosquitto CPU ${formatNumber(b.mosquittoCpuMicrosPerMessage, 1)} µs per message (in + PUBACK + delivery)`,
    );
  }
  if (report.storm !== undefined) {
    const s = report.storm;
    lines.push(
      `reconnect storm: ${thousands(s.sessions)} sessions cut (released by Mosquitto in ${s.releaseSeconds.toFixed(1)} s), ` +
        `${thousands(s.held)} back in ${s.seconds.toFixed(1)} s = ${formatNumber(s.connectsPerSecond, 0)} connects/s ` +
        `(full TLS handshakes), CONNACK p50 ${s.latency.p50.toFixed(0)} ms / p99 ${s.latency.p99.toFixed(0)} ms / max ` +
        `${s.latency.max.toFixed(0)} ms, errors ${errorsText(s.errors)}; ${thousands(s.listenOverflows)} connection attempts ` +
        "dropped by the kernel because Mosquitto's accept queue (backlog 100) was full (TcpExt ListenOverflows; the " +
        'device retransmits its SYN after 1 s, 3 s, ...)',
      `  Mosquitto CPU ${formatNumber(s.mosquittoCpuMsPerConnect, 3)} ms per connect (${formatNumber(s.mosquittoCpuPercent, 0)} % of a core ` +
        `during the storm; one core ≈ ${formatNumber(1000 / s.mosquittoCpuMsPerConnect, 0)} connects/s), client processes ` +
        `${formatNumber(s.clientCpuPercent, 0)} % of a core`,
      `  storm verdict: ${s.degraded === undefined ? 'every session back, CONNACK p99 within the limit' : `degraded: ${s.degraded}`}`,
    );
  }
  lines.push(
    `limits: Mosquitto open files ${limitText(report.limits.mosquittoOpenFiles)}, client processes ` +
      `${limitText(report.limits.workerOpenFiles)} (this process's hard limit ${report.limits.benchHardOpenFiles}: ` +
      'the most the bench can give without CAP_SYS_RESOURCE; one descriptor per session); ' +
      `ephemeral ports ${report.limits.ephemeralPorts} per source address, ${report.limits.sourceAddresses} source addresses`,
    `certificates issued this run: ${report.certificatesIssued} (the rest from the cache)`,
  );
  for (const line of lines) console.log(line);
}

export async function main(args: readonly string[] = []): Promise<void> {
  const sessions = numberOption(args, 'sessions', 10_000, 1, 1_000_000);
  const keepalive = numberOption(args, 'keepalive', 120, 5, 65_535);
  const telemetry = numberOption(args, 'telemetry-per-min', 1, 0, 600);
  const report = await runSessionBench({
    sessions,
    step: numberOption(args, 'step', 2500, 1, 1_000_000),
    keepaliveSeconds: keepalive,
    telemetryPerMinute: telemetry,
    workers: numberOption(args, 'workers', 3, 1, 64),
    sessionsPerAddress: numberOption(args, 'sessions-per-address', 1000, 1, 25_000),
    steadyMs: 1000 * numberOption(args, 'steady-s', 15, 1, 3600),
    connectConcurrency: numberOption(args, 'connect-concurrency', 32, 1, 10_000),
    stormConcurrency: numberOption(args, 'storm-concurrency', 256, 1, 10_000),
    connackP99Ms: numberOption(args, 'connack-p99-ms', 1000, 1, 600_000),
    probeConnects: numberOption(args, 'probe', 50, 1, 10_000),
    connectTimeoutMs: numberOption(args, 'connect-timeout-ms', 30_000, 100, 600_000),
    ...(args.includes('--broker-nofile')
      ? { brokerOpenFiles: numberOption(args, 'broker-nofile', 0, 16, 1 << 24) }
      : {}),
    cacheDir: stringOption(args, 'cache-dir', join(tmpdir(), 'blackcloud-bench-broker-sessions')),
    log: (line) => console.error(line),
  });
  printReport(report, { keepalive, telemetry });
}
