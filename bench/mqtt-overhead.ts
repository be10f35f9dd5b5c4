/**
 * What the secured path costs MQTT once a device is in: publish throughput and latency over mutual TLS to a real
 * Mosquitto (a) directly, (b) through the userspace gate, (c) through an nftables grant (Linux, root), measured in
 * interleaved rounds (direct, gate, nftables, direct, ...) so that load from other processes hits all three alike.
 *
 * - throughput: one publisher sends `--messages` QoS 1 messages of 64 bytes as fast as mqtt.js lets it, one
 *   subscriber on the same path receives them; messages per second from the first publish to the last delivery;
 * - latency: one client publishes QoS 0 to a topic it subscribes to and waits for the message before the next
 *   (`--pings` round trips; each crosses the path twice); p50 / p99.
 * The median of `--rounds` rounds is reported; "vs direct" is the median of the per-round ratios (the paths of one
 * round ran back to back, so they shared that moment's load). Run: `npm run bench -- mqtt-overhead [--rounds N] [--messages N]`.
 */
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import type { MqttClient } from 'mqtt';
import type { Grant } from '../functions/core/interfaces.ts';
import { deviceTopic } from '../functions/core/topics.ts';
import { startGateFirewall } from '../functions/local/gate-firewall.ts';
import { startNftablesFirewall } from '../functions/local/nftables-firewall.ts';
import { BENCH_IDENTITY, startMosquittoWithClient } from '../test/support/mosquitto.ts';
import { loopbackAddress } from './support/bench-cloud.ts';
import { connectOnce, endClient } from './support/mqtt-device.ts';
import { numberOption, percentile, printTable, thousands } from './support/table.ts';

interface PathSpec {
  readonly name: string;
  readonly port: number;
}

interface Sample {
  readonly rate: number;
  readonly p50: number;
  readonly p99: number;
}

const PAYLOAD = Buffer.alloc(64, 0x61);

async function throughput(
  pub: MqttClient,
  sub: MqttClient,
  topic: string,
  messages: number,
): Promise<number> {
  let received = 0;
  const done = new Promise<void>((resolve) => {
    sub.on('message', (t) => {
      if (t === topic && ++received === messages) resolve();
    });
  });
  await sub.subscribeAsync(topic, { qos: 1 });
  const started = performance.now();
  for (let i = 0; i < messages; i++) {
    pub.publish(topic, PAYLOAD, { qos: 1 });
    if (i % 500 === 499) await new Promise((resolve) => setImmediate(resolve));
  }
  await done;
  const rate = messages / ((performance.now() - started) / 1000);
  sub.removeAllListeners('message');
  await sub.unsubscribeAsync(topic);
  return rate;
}

async function latency(client: MqttClient, topic: string, pings: number): Promise<number[]> {
  await client.subscribeAsync(topic, { qos: 0 });
  const samples: number[] = [];
  for (let i = 0; i < pings; i++) {
    const started = performance.now();
    await new Promise<void>((resolve) => {
      client.once('message', () => resolve());
      client.publish(topic, PAYLOAD, { qos: 0 });
    });
    samples.push(performance.now() - started);
  }
  await client.unsubscribeAsync(topic);
  return samples;
}

export async function main(args: readonly string[] = []): Promise<void> {
  const rounds = numberOption(args, 'rounds', 5, 1, 50);
  const messages = numberOption(args, 'messages', 10_000, 100, 1_000_000);
  const pings = numberOption(args, 'pings', 1000, 10, 100_000);
  const mosquitto = await startMosquittoWithClient(2, {
    logType: 'error',
    extraConf: ['max_queued_messages 100000'],
  });
  const [openPort, guardedPort] = mosquitto.ports as [number, number];
  const source = loopbackAddress(6, 0);
  const grant: Grant = {
    deviceId: 'bench',
    address: source,
    family: 4,
    access: [{ protocol: 'tcp', port: 0 }],
    openedAt: Date.now(),
    expiresAt: Date.now() + 3_600_000,
  };
  const cleanups: (() => Promise<void>)[] = [];
  const results = new Map<string, Sample[]>();
  try {
    const gate = await startGateFirewall({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: '127.0.0.1', port: openPort },
    });
    cleanups.push(() => gate.close());
    const gatePort = gate.address().port;
    await gate.allow([{ ...grant, access: [{ protocol: 'tcp', port: gatePort }] }]);
    const paths: PathSpec[] = [
      { name: 'direct', port: openPort },
      { name: 'gate', port: gatePort },
    ];
    try {
      const nft = await startNftablesFirewall({
        table: `bc8mqtt${randomBytes(3).toString('hex')}`,
        ports: [{ protocol: 'tcp', port: guardedPort }],
      });
      cleanups.push(() => nft.close());
      await nft.allow([{ ...grant, access: [{ protocol: 'tcp', port: guardedPort }] }]);
      paths.push({ name: 'nftables', port: guardedPort });
    } catch (error) {
      console.log(`nftables path skipped: ${(error as Error).message}`);
    }

    const connect = (port: number, id: string) =>
      connectOnce({ port, tls: mosquitto.tls, localAddress: source, clientId: id, timeoutMs: 5000 });
    for (let round = 0; round <= rounds; round++) {
      for (const path of paths) {
        const pub = await connect(path.port, `pub-${path.name}-${round}`);
        const sub = await connect(path.port, `sub-${path.name}-${round}`);
        try {
          const rate = await throughput(
            pub,
            sub,
            deviceTopic(BENCH_IDENTITY, 'bench', path.name, String(round), 't'),
            round === 0 ? 500 : messages,
          );
          const sorted = (
            await latency(
              sub,
              deviceTopic(BENCH_IDENTITY, 'bench', path.name, String(round), 'l'),
              round === 0 ? 50 : pings,
            )
          ).sort((a, b) => a - b);
          // Round 0 warms up (JIT, TLS, Mosquitto) and is not reported.
          if (round > 0) {
            const list = results.get(path.name) ?? [];
            list.push({ rate, p50: percentile(sorted, 50), p99: percentile(sorted, 99) });
            results.set(path.name, list);
          }
        } finally {
          await endClient(pub);
          await endClient(sub);
        }
      }
    }
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    await mosquitto.stop();
  }

  const median = (values: number[]): number =>
    percentile(
      [...values].sort((a, b) => a - b),
      50,
    );
  const summary = new Map(
    [...results].map(([name, samples]) => [
      name,
      {
        rate: median(samples.map((s) => s.rate)),
        p50: median(samples.map((s) => s.p50)),
        p99: median(samples.map((s) => s.p99)),
        rates: samples.map((s) => thousands(s.rate)).join(' / '),
      },
    ]),
  );
  const direct = summary.get('direct')!;
  // Each round measured the paths back to back: the median of per-round ratios cancels load shared by a round.
  const directRounds = results.get('direct') ?? [];
  const ratioOf = (name: string): number =>
    median((results.get(name) ?? []).map((s, i) => s.rate / (directRounds[i]?.rate ?? Number.NaN)));
  console.log(
    `MQTT over mutual TLS to Mosquitto, 64 B payloads, loopback; median of ${rounds} interleaved rounds ` +
      `(node ${process.version}, ${cpus().length} x ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, load average ` +
      `${loadavg()[0]!.toFixed(2)})\n`,
  );
  printTable(
    ['path', 'QoS1 msg/s', 'vs direct', 'rounds (msg/s)', 'RTT p50 ms', 'RTT p99 ms', 'RTT p50 +ms'],
    [...summary].map(([name, s]) => [
      name,
      thousands(s.rate),
      `${(ratioOf(name) * 100).toFixed(1)}%`,
      s.rates,
      s.p50.toFixed(3),
      s.p99.toFixed(3),
      (s.p50 - direct.p50).toFixed(3),
    ]),
  );
  const pct = (name: string): string => (results.has(name) ? `${(ratioOf(name) * 100).toFixed(1)}%` : 'n/a');
  console.log(
    `\nsummary: throughput through the gate ${pct('gate')} of direct (target >= 95%), through nftables ` +
      `${pct('nftables')} (target >= 99%); round-trip p50 direct ${direct.p50.toFixed(3)} ms, gate ` +
      `${summary.get('gate')?.p50.toFixed(3) ?? 'n/a'} ms, nftables ${summary.get('nftables')?.p50.toFixed(3) ?? 'n/a'} ms`,
  );
}
