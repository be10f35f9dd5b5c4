/**
 * Latency from sending a knock to MQTT CONNACK over mutual TLS, on loopback, per device (each device its own key
 * and its own source address), for the userspace gate and for nftables (Linux, root), side by side in one run:
 * p50 / p90 / p99 / max over `--devices` devices (default 1,000) each, one device at a time. A direct TLS
 * connect to the broker (no knock, no firewall) is the baseline row.
 *
 * The device sends its knock, then dials at once; a dial that arrives before the grant is refused (gate: a RST,
 * retried at once) or unanswered (nftables: the SYN is dropped; the device probes TCP with a new SYN every
 * `--probe-ms`, default 5 ms, instead of waiting for the kernel's 1 s retransmit): the attempts column counts
 * dials and probes. Receiver, gate, broker and devices share this machine's cores.
 * Run: `npm run bench -- knock-to-connack [--devices N] [--probe-ms MS]`.
 */
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import type { Firewall } from '../functions/core/interfaces.ts';
import { startGateFirewall } from '../functions/local/gate-firewall.ts';
import { startNftablesFirewall } from '../functions/local/nftables-firewall.ts';
import { type MosquittoWithClient, startMosquittoWithClient } from '../test/support/mosquitto.ts';
import { type BenchDevice, knockFrom, makeBenchDevices, startBenchReceiver } from './support/bench-cloud.ts';
import { connectWithRetry, endClient, waitForTcp } from './support/mqtt-device.ts';
import { numberOption, percentile, printTable } from './support/table.ts';

interface Row {
  readonly name: string;
  readonly latencies: number[];
  readonly attempts: number[];
  readonly failures: number;
}

async function measure(
  name: string,
  devices: readonly BenchDevice[],
  mosquitto: MosquittoWithClient,
  dialPort: number,
  attemptMs: number,
  knock: ((device: BenchDevice) => Promise<void>) | undefined,
  probeMs = 0,
): Promise<Row> {
  const latencies: number[] = [];
  const attempts: number[] = [];
  let failures = 0;
  for (const device of devices) {
    const started = performance.now();
    try {
      if (knock !== undefined) await knock(device);
      const probes = probeMs > 0 ? (await waitForTcp(dialPort, device.address, probeMs, 5000)) - 1 : 0;
      const connected = await connectWithRetry({
        port: dialPort,
        tls: mosquitto.tls,
        localAddress: device.address,
        clientId: `${device.id}-${randomBytes(3).toString('hex')}`,
        timeoutMs: attemptMs,
        deadlineMs: 5000,
        retryDelayMs: 0,
      });
      latencies.push(performance.now() - started);
      attempts.push(connected.attempts + probes);
      await endClient(connected.client);
    } catch {
      failures++;
    }
  }
  return { name, latencies, attempts, failures };
}

export async function main(args: readonly string[] = []): Promise<void> {
  const count = numberOption(args, 'devices', 1000, 10, 100_000);
  const probeMs = numberOption(args, 'probe-ms', 5, 1, 10_000);
  const mosquitto = await startMosquittoWithClient(2, {
    logType: 'error',
    extraConf: ['max_queued_messages 100000'],
  });
  const [openPort, guardedPort] = mosquitto.ports as [number, number];
  const rows: Row[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  try {
    // Warm-up (TLS session code paths, JIT): 20 direct connects, not reported.
    const warm = makeBenchDevices(20, 9);
    await measure('warm-up', warm, mosquitto, openPort, 2000, undefined);
    rows.push(
      await measure(
        'direct TLS (no knock)',
        makeBenchDevices(count, 5),
        mosquitto,
        openPort,
        2000,
        undefined,
      ),
    );

    // The gate in front of the unguarded broker.
    const gate = await startGateFirewall({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: '127.0.0.1', port: openPort },
    });
    cleanups.push(() => gate.close());
    const gatePort = gate.address().port;
    const gateDevices = makeBenchDevices(count, 3);
    const gateReceiver = await startBenchReceiver(gateDevices, gatePort, gate);
    cleanups.push(() => gateReceiver.close());
    rows.push(
      await measure('knock -> CONNACK, gate', gateDevices, mosquitto, gatePort, 2000, (d) =>
        knockFrom(d, gateReceiver.receiver.address.port, gatePort),
      ),
    );

    // nftables guarding the second broker (a table of our own, deleted at the end).
    let nft: Firewall & { close(): Promise<void> };
    try {
      nft = await startNftablesFirewall({
        table: `bc8bench${randomBytes(3).toString('hex')}`,
        ports: [{ protocol: 'tcp', port: guardedPort }],
      });
    } catch (error) {
      console.log(`nftables row skipped: ${(error as Error).message}`);
      nft = undefined as never;
    }
    if (nft !== undefined) {
      cleanups.push(() => nft.close());
      const nftDevices = makeBenchDevices(count, 4);
      const nftReceiver = await startBenchReceiver(nftDevices, guardedPort, nft);
      cleanups.push(() => nftReceiver.close());
      rows.push(
        await measure(
          'knock -> CONNACK, nftables',
          nftDevices,
          mosquitto,
          guardedPort,
          2000,
          (d) => knockFrom(d, nftReceiver.receiver.address.port, guardedPort),
          probeMs,
        ),
      );
    }
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    await mosquitto.stop();
  }

  console.log(
    `Knock to MQTT CONNACK over mutual TLS (ECDSA P-256), loopback, one device at a time, ${count} devices per row ` +
      `(node ${process.version}, ${cpus().length} x ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, load average ` +
      `${loadavg()[0]!.toFixed(2)})\n`,
  );
  printTable(
    ['path', 'devices', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'mean attempts', 'max attempts', 'failures'],
    rows.map((row) => {
      const sorted = [...row.latencies].sort((a, b) => a - b);
      const meanAttempts = row.attempts.reduce((a, b) => a + b, 0) / Math.max(1, row.attempts.length);
      return [
        row.name,
        row.latencies.length,
        percentile(sorted, 50).toFixed(2),
        percentile(sorted, 90).toFixed(2),
        percentile(sorted, 99).toFixed(2),
        (sorted[sorted.length - 1] ?? Number.NaN).toFixed(2),
        meanAttempts.toFixed(2),
        Math.max(0, ...row.attempts),
        row.failures,
      ];
    }),
  );
  const p = (name: string, q: number): string => {
    const row = rows.find((r) => r.name.endsWith(name));
    return row === undefined
      ? 'n/a'
      : percentile(
          [...row.latencies].sort((a, b) => a - b),
          q,
        ).toFixed(1);
  };
  console.log(
    `\nsummary: knock -> CONNACK with the gate p50 ${p('gate', 50)} ms / p99 ${p('gate', 99)} ms (target <= 15 / ` +
      `<= 50), nftables p50 ${p('nftables', 50)} ms / p99 ${p('nftables', 99)} ms; direct TLS p50 ` +
      `${p('(no knock)', 50)} ms`,
  );
}
