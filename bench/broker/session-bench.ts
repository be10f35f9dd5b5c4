/**
 * The core of `npm run bench -- broker-sessions` (bench/broker-sessions.ts prints it; test/bench/broker-sessions.test.ts
 * runs it tiny): how many concurrent mutual-TLS MQTT sessions one real Mosquitto 2.0.11 holds on this machine.
 *
 * Set-up: Mosquitto with the configuration blackcloud generates (functions/broker/mosquitto-config.ts: TLS
 * listener, client certificates required, `use_identity_as_username`, the dynamic-security plugin with one client
 * and one role per device, as `up --broker` and the AWS broker host run it), under `prlimit` so it may hold a
 * descriptor per session; every device its own P-256 certificate (bench/broker/device-certificates.ts, cached);
 * `workers` client processes (bench/broker/session-worker.ts) share the devices round robin, and device i dials
 * from loopback address `loopbackAddress(block, floor(i / sessionsPerAddress))` so no source address runs out of
 * ephemeral ports; a backend session (the controller's certificate) subscribes to every device's telemetry.
 *
 * Run: ramp in steps of `step` up to `sessions`; after each step, hold for `steadyMs` and read Mosquitto's
 * VmRSS, its descriptors (= sessions it holds) and its CPU (utime + stime) over the interval, the telemetry's
 * PUBACKs, and the CONNACK latency of `probeConnects` new connections made one after the other by a probe device
 * while the others are held. The ramp stops at the first degraded step (session-figures.ts `degradation`). At the
 * highest clean step: a burst (every session publishes one QoS 1 message at once: Mosquitto CPU per message) and a
 * reconnect storm (every session cut without DISCONNECT, Mosquitto seen to release them, then all reconnect,
 * `stormConcurrency` in flight per client process: connects/s with full TLS handshakes, CONNACK p50/p99, and
 * Mosquitto CPU per connect). Everything started is stopped before it resolves, also on failure.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { DEVICE_TOPIC_ROOT } from '../../functions/core/topics.ts';
import { requireTool } from '../../test/functions/local/helpers.ts';
import { type RunningMosquitto, startMosquitto } from '../../test/support/mosquitto.ts';
import { loopbackAddress } from '../support/bench-cloud.ts';
import { connectOnce, endClient } from '../support/mqtt-device.ts';
import { ensureDeviceCertificates } from './device-certificates.ts';
import {
  cpuSeconds,
  type FileLimits,
  listenOverflows,
  loadAverage,
  type Machine,
  machine,
  openDescriptors,
  openFileLimits,
  residentBytes,
} from './process-stats.ts';
import {
  cpuPercentPer1000,
  degradation,
  type Latency,
  latency,
  slope,
  stormDegradation,
} from './session-figures.ts';
import { callAll, countFor, mergeOpen, startWorker, sumStats, type Worker } from './worker-pool.ts';
import type { AssignedDevice, BurstResult, WorkerStats } from './worker-protocol.ts';

export interface SessionBenchOptions {
  /** Most sessions to hold (the last step). */
  readonly sessions: number;
  readonly step: number;
  readonly keepaliveSeconds: number;
  readonly telemetryPerMinute: number;
  /** Client processes. */
  readonly workers: number;
  readonly sessionsPerAddress: number;
  /** Hold time per step over which CPU and telemetry are measured. */
  readonly steadyMs: number;
  /** Connects in flight per client process while ramping. */
  readonly connectConcurrency: number;
  /** Connects in flight per client process in the reconnect storm. */
  readonly stormConcurrency: number;
  /** A step whose probe CONNACK p99 exceeds this is degraded. */
  readonly connackP99Ms: number;
  readonly probeConnects: number;
  readonly connectTimeoutMs: number;
  /** Where the certificates are cached (bench/broker/device-certificates.ts). */
  readonly cacheDir: string;
  /**
   * Mosquitto's RLIMIT_NOFILE (soft and hard). @default sessions + 1024, capped at this process's hard limit
   * (raising past it needs CAP_SYS_RESOURCE); 1024 reproduces systemd's default soft limit for a service.
   */
  readonly brokerOpenFiles?: number;
  /** Second octet of the devices' loopback addresses (127.<block>.x.y). @default 20 */
  readonly addressBlock?: number;
  readonly log?: (line: string) => void;
}

export interface StepFigures {
  readonly target: number;
  readonly held: number;
  readonly brokerSessions: number;
  /** Distinct source addresses of the held sessions, as their sockets report them. */
  readonly sourceAddresses: number;
  readonly rampSeconds: number;
  readonly rampConnectsPerSecond: number;
  readonly ramp: Latency;
  readonly connectErrors: Record<string, number>;
  readonly rampMosquittoCpuMsPerConnect: number;
  /** Kernel listen-queue overflows during the ramp (this namespace). */
  readonly rampListenOverflows: number;
  readonly rssBytes: number;
  readonly steadySeconds: number;
  /** Mosquitto's CPU over the hold, % of one core. */
  readonly mosquittoCpuPercent: number;
  readonly cpuPercentPer1000: number;
  readonly telemetryPublished: number;
  readonly telemetryAcked: number;
  readonly lost: number;
  readonly probe: Latency;
  /** All client processes' CPU over the hold, % of one core, and their total RSS. */
  readonly clientCpuPercent: number;
  readonly clientRssBytes: number;
  readonly degraded: string | undefined;
}

export interface StormFigures {
  readonly sessions: number;
  readonly seconds: number;
  readonly connectsPerSecond: number;
  readonly latency: Latency;
  readonly errors: Record<string, number>;
  readonly held: number;
  readonly mosquittoCpuMsPerConnect: number;
  readonly mosquittoCpuPercent: number;
  readonly clientCpuPercent: number;
  /** How long Mosquitto took to release the cut sessions. */
  readonly releaseSeconds: number;
  /** Connections the kernel dropped meanwhile because Mosquitto's accept queue (its backlog) was full. */
  readonly listenOverflows: number;
  /** session-figures.ts `stormDegradation`. */
  readonly degraded: string | undefined;
}

export interface BurstFigures {
  readonly messages: number;
  readonly failed: number;
  readonly seconds: number;
  readonly delivered: number;
  readonly mosquittoCpuMicrosPerMessage: number;
}

export interface SessionBenchReport {
  readonly machine: Machine;
  readonly mosquittoVersion: string;
  readonly loadBefore: string;
  readonly loadAfter: string;
  readonly baseline: { readonly rssBytes: number; readonly descriptors: number; readonly cpuPercent: number };
  readonly steps: readonly StepFigures[];
  /** Bytes of Mosquitto RSS per session held (least-squares slope over the baseline and the steps). */
  readonly memoryPerSessionBytes: number;
  readonly burst: BurstFigures | undefined;
  readonly storm: StormFigures | undefined;
  readonly degradedAt: { readonly target: number; readonly reason: string } | undefined;
  /** Most sessions held in a clean step. */
  readonly maxHeld: number;
  readonly limits: {
    readonly mosquittoOpenFiles: FileLimits;
    readonly workerOpenFiles: FileLimits;
    /** This process's hard limit: what the bench could give Mosquitto without CAP_SYS_RESOURCE. */
    readonly benchHardOpenFiles: number;
    readonly ephemeralPorts: string;
    readonly sourceAddresses: number;
  };
  readonly certificatesIssued: number;
  readonly telemetryDelivered: number;
}

async function mosquittoVersion(): Promise<string> {
  const binary = await requireTool('mosquitto', 'mosquitto');
  const child = spawn(binary, ['-h'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  await new Promise((resolve) => child.once('exit', resolve));
  return /mosquitto version (\S+)/.exec(text)?.[1] ?? 'unknown';
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runSessionBench(options: SessionBenchOptions): Promise<SessionBenchReport> {
  const log = options.log ?? (() => undefined);
  const block = options.addressBlock ?? 20;
  const total = options.sessions;
  const loadBefore = await loadAverage();
  const prlimit = await requireTool('prlimit', 'util-linux');
  const benchHardOpenFiles = (await openFileLimits('self')).hard;
  const brokerOpenFiles = options.brokerOpenFiles ?? Math.min(total + 1024, benchHardOpenFiles);
  const certs = await ensureDeviceCertificates(options.cacheDir, total + 1, log);
  const ids = certs.ids.slice(0, total);
  const probeTls = certs.devices[total]!;
  const probeId = certs.ids[total]!;
  const workDir = await mkdtemp(join(tmpdir(), 'bc-broker-sessions-'));
  const workers: Worker[] = [];
  let mosquitto: RunningMosquitto | undefined;
  let backend: MqttClient | undefined;
  try {
    mosquitto = await startMosquitto(certs.pkiDir, workDir, {
      logType: 'error',
      dynamicSecurity: { devices: [...ids, probeId].map((id) => ({ id, enabled: true })) },
      fileLimit: brokerOpenFiles,
      // The backend subscriber takes every device's telemetry: let its queue hold a burst of one message each.
      extraConf: [`max_queued_messages ${total + 1000}`],
    });
    const pid = mosquitto.pid()!;
    const port = mosquitto.port;
    let delivered = 0;
    backend = await connectOnce({
      port,
      tls: certs.controller,
      clientId: 'bench-backend',
      timeoutMs: 10_000,
      keepaliveSeconds: options.keepaliveSeconds,
    });
    backend.on('message', () => {
      delivered++;
    });
    await backend.subscribeAsync(`${DEVICE_TOPIC_ROOT}/+/telemetry`, { qos: 1 });

    const perWorker = Math.ceil(total / options.workers);
    const workerOpenFiles = Math.min(perWorker + 1024, benchHardOpenFiles);
    for (let w = 0; w < options.workers; w++) workers.push(await startWorker(prlimit, workerOpenFiles));
    await callAll(
      workers,
      (w) => ({
        type: 'init',
        port,
        keepaliveSeconds: options.keepaliveSeconds,
        telemetryPerMinute: options.telemetryPerMinute,
        connectTimeoutMs: options.connectTimeoutMs,
        devices: ids.flatMap((id, i): AssignedDevice[] =>
          i % options.workers === w
            ? [
                {
                  id,
                  tls: certs.devices[i]!,
                  localAddress: loopbackAddress(block, Math.floor(i / options.sessionsPerAddress)),
                },
              ]
            : [],
        ),
      }),
      'ready',
    );
    const stats = async (): Promise<WorkerStats> =>
      sumStats((await callAll(workers, () => ({ type: 'stats' }), 'stats')).map((reply) => reply.stats));
    /** The workers' stats once every counted publish is acked or failed, or after 5 s of waiting. */
    const settledStats = async (): Promise<WorkerStats> => {
      let now = await stats();
      for (let i = 0; i < 50 && now.acked + now.publishFailed < now.published; i++) {
        await sleep(100);
        now = await stats();
      }
      return now;
    };
    const clientCpu = async (): Promise<number> =>
      (await Promise.all(workers.map((worker) => cpuSeconds(worker.pid)))).reduce((a, b) => a + b, 0);
    const clientRss = async (): Promise<number> =>
      (await Promise.all(workers.map((worker) => residentBytes(worker.pid)))).reduce((a, b) => a + b, 0);

    // Baseline: the broker with its dynsec file loaded and the backend session, no device session.
    await sleep(500);
    const baseCpu0 = await cpuSeconds(pid);
    const baseT0 = performance.now();
    await sleep(Math.min(options.steadyMs, 5000));
    const baseline = {
      cpuPercent: (100 * ((await cpuSeconds(pid)) - baseCpu0)) / ((performance.now() - baseT0) / 1000),
      rssBytes: await residentBytes(pid),
      descriptors: await openDescriptors(pid),
    };
    log(
      `baseline: Mosquitto RSS ${(baseline.rssBytes / 2 ** 20).toFixed(1)} MiB, ${baseline.descriptors} fds`,
    );

    const probe = async (): Promise<Latency> => {
      const values: number[] = [];
      for (let i = 0; i < options.probeConnects; i++) {
        const t0 = performance.now();
        try {
          const client = await connectOnce({
            port,
            tls: probeTls,
            localAddress: loopbackAddress(block + 1, 0),
            clientId: probeId,
            timeoutMs: options.connectTimeoutMs,
            keepaliveSeconds: options.keepaliveSeconds,
          });
          values.push(performance.now() - t0);
          await endClient(client);
        } catch {
          values.push(options.connectTimeoutMs);
        }
      }
      return latency(values);
    };

    const steps: StepFigures[] = [];
    const targets: number[] = [];
    for (let t = options.step; t < total; t += options.step) targets.push(t);
    targets.push(total);
    let degradedAt: SessionBenchReport['degradedAt'];
    let maxHeld = 0;
    for (const target of targets) {
      const rampCpu0 = await cpuSeconds(pid);
      const rampOverflows0 = await listenOverflows();
      const rampT0 = performance.now();
      const before = (await stats()).held;
      const opened = mergeOpen(
        (
          await callAll(
            workers,
            (w) => ({
              type: 'open',
              count: countFor(target, w, options.workers),
              concurrency: options.connectConcurrency,
            }),
            'opened',
          )
        ).map((reply) => reply.result),
      );
      const rampSeconds = (performance.now() - rampT0) / 1000;
      const rampCpu = (await cpuSeconds(pid)) - rampCpu0;
      const rampListenOverflows = (await listenOverflows()) - rampOverflows0;
      await sleep(1000);
      // Both ends of the steady window without telemetry in flight (as far as 5 s allow): an ack counted after s0
      // for a message published before it would count in the window's acks but not its publishes.
      const s0 = await settledStats();
      const cpu0 = await cpuSeconds(pid);
      const client0 = await clientCpu();
      const t0 = performance.now();
      await sleep(options.steadyMs);
      const cpu1 = await cpuSeconds(pid);
      const client1 = await clientCpu();
      const steadySeconds = (performance.now() - t0) / 1000;
      const rssBytes = await residentBytes(pid);
      const brokerSessions = (await openDescriptors(pid)) - baseline.descriptors;
      const s1 = await settledStats();
      const probeLatency = await probe();
      const mosquittoCpuPercent = (100 * (cpu1 - cpu0)) / steadySeconds;
      const newConnects = opened.latencies.length;
      const figures: Omit<StepFigures, 'degraded'> = {
        target,
        held: s1.held,
        brokerSessions,
        sourceAddresses: s1.localAddresses.length,
        rampSeconds,
        rampConnectsPerSecond: newConnects / rampSeconds,
        ramp: latency(opened.latencies),
        connectErrors: opened.errors,
        rampMosquittoCpuMsPerConnect: newConnects > 0 ? (1000 * rampCpu) / newConnects : Number.NaN,
        rampListenOverflows,
        rssBytes,
        steadySeconds,
        mosquittoCpuPercent,
        cpuPercentPer1000: cpuPercentPer1000(cpu1 - cpu0, steadySeconds, s1.held),
        telemetryPublished: s1.published - s0.published,
        telemetryAcked: s1.acked - s0.acked,
        lost: s1.lost,
        probe: probeLatency,
        clientCpuPercent: (100 * (client1 - client0)) / steadySeconds,
        clientRssBytes: await clientRss(),
      };
      const degraded = degradation(
        {
          target,
          held: s1.held,
          brokerSessions,
          connectErrors: opened.errorCount,
          lost: s1.lost,
          unacked: s1.published - s1.acked,
          probeP99Ms: probeLatency.p99,
        },
        options.connackP99Ms,
      );
      steps.push({ ...figures, degraded });
      log(
        `step ${target}: held ${s1.held} (broker ${brokerSessions}; +${s1.held - before} in ${rampSeconds.toFixed(1)} s), ` +
          `RSS ${(rssBytes / 2 ** 20).toFixed(1)} MiB, CPU ${mosquittoCpuPercent.toFixed(2)} %, probe p99 ` +
          `${probeLatency.p99.toFixed(1)} ms${degraded === undefined ? '' : `, degraded: ${degraded}`}`,
      );
      if (degraded !== undefined) {
        degradedAt = { target, reason: degraded };
        break;
      }
      maxHeld = s1.held;
    }

    // The burst and the storm run at the level held now.
    const heldNow = (await stats()).held;
    let burst: BurstFigures | undefined;
    if (heldNow > 0) {
      const deliveredBefore = delivered;
      const cpu0 = await cpuSeconds(pid);
      const t0 = performance.now();
      const results: BurstResult[] = (await callAll(workers, () => ({ type: 'burst' }), 'burst')).map(
        (reply) => reply.result,
      );
      const seconds = (performance.now() - t0) / 1000;
      const messages = results.reduce((a, r) => a + r.messages, 0);
      for (let i = 0; i < 100 && delivered - deliveredBefore < messages; i++) await sleep(100);
      const cpu = (await cpuSeconds(pid)) - cpu0;
      burst = {
        messages,
        failed: results.reduce((a, r) => a + r.failed, 0),
        seconds,
        delivered: delivered - deliveredBefore,
        mosquittoCpuMicrosPerMessage: (1e6 * cpu) / Math.max(1, messages),
      };
      log(`burst: ${messages} QoS 1 messages in ${seconds.toFixed(2)} s, ${burst.delivered} delivered`);
    }

    let storm: StormFigures | undefined;
    if (heldNow > 0) {
      const cut = performance.now();
      await callAll(workers, () => ({ type: 'drop' }), 'dropped');
      for (let i = 0; i < 600 && (await openDescriptors(pid)) > baseline.descriptors; i++) await sleep(100);
      const releaseSeconds = (performance.now() - cut) / 1000;
      const overflows0 = await listenOverflows();
      const cpu0 = await cpuSeconds(pid);
      const client0 = await clientCpu();
      const t0 = performance.now();
      const opened = mergeOpen(
        (
          await callAll(
            workers,
            (w) => ({
              type: 'open',
              count: countFor(heldNow, w, options.workers),
              concurrency: options.stormConcurrency,
            }),
            'opened',
          )
        ).map((reply) => reply.result),
      );
      const seconds = (performance.now() - t0) / 1000;
      const cpu = (await cpuSeconds(pid)) - cpu0;
      const clientCpuSeconds = (await clientCpu()) - client0;
      const stormOverflows = (await listenOverflows()) - overflows0;
      const heldAfter = (await stats()).held;
      storm = {
        sessions: heldNow,
        seconds,
        connectsPerSecond: opened.latencies.length / seconds,
        latency: latency(opened.latencies),
        errors: opened.errors,
        held: heldAfter,
        mosquittoCpuMsPerConnect: (1000 * cpu) / Math.max(1, opened.latencies.length),
        mosquittoCpuPercent: (100 * cpu) / seconds,
        clientCpuPercent: (100 * clientCpuSeconds) / seconds,
        releaseSeconds,
        listenOverflows: stormOverflows,
        degraded: stormDegradation(
          {
            sessions: heldNow,
            held: heldAfter,
            errors: opened.errorCount,
            p99Ms: latency(opened.latencies).p99,
          },
          options.connackP99Ms,
        ),
      };
      log(
        `storm: ${opened.latencies.length} of ${heldNow} reconnected in ${seconds.toFixed(1)} s, ` +
          `${opened.errorCount} errors`,
      );
    }

    const points = [
      { x: 0, y: baseline.rssBytes },
      ...steps.map((step) => ({ x: step.brokerSessions, y: step.rssBytes })),
    ];
    return {
      machine: machine(),
      mosquittoVersion: await mosquittoVersion(),
      loadBefore,
      loadAfter: await loadAverage(),
      baseline,
      steps,
      memoryPerSessionBytes: slope(points),
      burst,
      storm,
      degradedAt,
      maxHeld,
      limits: {
        mosquittoOpenFiles: await openFileLimits(pid),
        workerOpenFiles: await openFileLimits(workers[0]!.pid),
        benchHardOpenFiles,
        ephemeralPorts: (await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8'))
          .trim()
          .replace(/\s+/, '-'),
        sourceAddresses: Math.ceil(total / options.sessionsPerAddress),
      },
      certificatesIssued: certs.issued,
      telemetryDelivered: delivered,
    };
  } finally {
    await Promise.all(
      workers.map(async (worker) => {
        if (worker.child.exitCode !== null) return;
        const gone = new Promise((resolve) => worker.child.once('exit', resolve));
        worker.call({ type: 'exit' }).catch(() => undefined);
        const timer = setTimeout(() => worker.child.kill('SIGKILL'), 5000);
        await gone;
        clearTimeout(timer);
      }),
    );
    if (backend !== undefined) await endClient(backend);
    await mosquitto?.stop();
    await rm(workDir, { recursive: true, force: true });
  }
}
