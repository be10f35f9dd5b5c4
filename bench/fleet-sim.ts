/**
 * Fleet simulation: 100,000 devices knocking on several in-process receivers, as behind the UDP load balancer.
 * Each receiver is the real pipeline (handleDatagram, GrantManager, SecurityGroupFirewall with its coalescing,
 * spreading, queueing and retries) with its own DynamoDB client; all share one moto server (python3 -m moto.server)
 * for the nonce and grants tables, and one EC2 model (bench/support/modelled-ec2.ts: per-action token buckets, 50
 * burst and 5/s for Authorize/Revoke, the rules-per-group quota, EC2's error codes). Time is virtual
 * (test/support/virtual-time.ts): DynamoDB round trips to moto take no simulated time; EC2 calls take `--ec2-ms`.
 *
 * Traffic (bench/fleet/fleet-model.ts): steady reconnects, a regional outage followed by a reconnect storm of the
 * whole fleet, and a drip of replays and junk. Devices whose grant is refused (every rule slot taken and the
 * receiver's queue full, or expired while queued) knock again after a jittered backoff, at most `--retries` times.
 *
 * Closed on connect (docs/scaling.md, "A rule lives until the session is established"): a device has its MQTT session
 * a short time after its rule is in place (bench/fleet/connect-model.ts: `--connect-min-ms` to `--connect-max-ms`,
 * uniform, default 300 ms to 1 s), and the simulation then tells the receiver that opened the rule, through the real
 * `GrantManager.sessionEstablished`, which releases the device's claim and revokes the rule. `--close-on-connect 2`
 * (the default) runs the whole simulation twice, rules held for the window (0) and closed on connect (1), and prints
 * them side by side; 0 or 1 runs one of them.
 *
 * Prints: knocks accepted, replays caught, junk dropped, EC2 calls (and throttles), largest grant queue, knock to
 * rule for p50/p99 devices (steady and storm), rules in use (peak), explicit refusals, errors, and the checks
 * "no lost grant" (after the drain every knock has its answer; rules and grants table agree; all revoked); storm
 * devices granted by 10 and 15 simulated minutes, rules in use over time, how long rules stayed (opened to revoked,
 * p50/p99) and why they closed.
 *
 *   npm run bench -- fleet-sim [--devices 100000] [--receivers 4] [--groups 5] [--rules-per-group 200]
 *        [--grant-seconds 30] [--queue 1000] [--retries 0] [--ec2-ms 100] [--coalesce-ms 20] [--attempts 8]
 *        [--seed 1]
 *        [--close-on-connect 2] [--connect-min-ms 300] [--connect-max-ms 1000]
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoGrantStore } from '../functions/aws/dynamo-grant-store.ts';
import { DynamoNonceStore } from '../functions/aws/dynamo-nonce-store.ts';
import type { Metrics } from '../functions/aws/metrics.ts';
import { SecurityGroupFirewall } from '../functions/aws/security-group-firewall.ts';
import type { AuditEvent, AuditSink } from '../functions/core/interfaces.ts';
import { handleDatagram, type Outcome } from '../functions/receiver/handle-datagram.ts';
import { createReceiverDeps, type WiredReceiverDeps } from '../functions/receiver/receiver-deps.ts';
import { sweepExpiredGrants } from '../functions/sweeper/sweep.ts';
import { encodeBc1 } from '../spa/bc1.ts';
import { createTable, MOTO_CREDENTIALS, MOTO_REGION, startMoto } from '../test/support/moto.ts';
import { VirtualTime } from '../test/support/virtual-time.ts';
import { type ConnectRange, connectDelayMs, DEFAULT_CONNECT_RANGE } from './fleet/connect-model.ts';
import { FleetDirectory, fleetDeviceId } from './fleet/fleet-directory.ts';
import { deviceAddress, type FleetParams, fleetSchedule, seededRandom } from './fleet/fleet-model.ts';
import { ModelledEc2 } from './support/modelled-ec2.ts';

interface SimOptions {
  readonly devices: number;
  readonly receivers: number;
  readonly groups: number;
  readonly rulesPerGroup: number;
  readonly grantSeconds: number;
  readonly queue: number;
  readonly retries: number;
  readonly ec2Ms: number;
  readonly coalesceMs: number;
  /** Attempts per EC2 call when throttled (the receiver's BLACKCLOUD_EC2_ATTEMPTS). */
  readonly attempts: number;
  readonly seed: number;
  /** 0: rules held for the window; 1: closed on connect; 2: both, side by side. */
  readonly closeOnConnect: number;
  readonly connectMinMs: number;
  readonly connectMaxMs: number;
}

const DEFAULTS: SimOptions = {
  devices: 100_000,
  receivers: 4,
  groups: 5,
  rulesPerGroup: 200,
  grantSeconds: 30,
  queue: 1000,
  retries: 0,
  ec2Ms: 100,
  coalesceMs: 20,
  attempts: 8,
  seed: 1,
  closeOnConnect: 2,
  connectMinMs: DEFAULT_CONNECT_RANGE.minMs,
  connectMaxMs: DEFAULT_CONNECT_RANGE.maxMs,
};

/** Simulated seconds at which the rules in use are sampled (the storm starts at 180 s). */
const RULE_SAMPLES_S = [60, 180, 210, 240, 300, 360, 480, 600, 900];

const START_MS = Date.UTC(2026, 0, 1);

/** Rejections that are the simulation's own attacks (replays, junk) or explicit refusals: not errors. */
const EXPECTED_REJECTIONS: ReadonlySet<string> = new Set([
  'replay',
  'grant-failed',
  'too-short',
  'too-long',
  'bad-magic',
  'unknown-key',
  'auth-failed',
  'malformed',
  'stale',
]);

function parseOptions(argv: readonly string[]): SimOptions {
  const options: Record<string, number> = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i] ?? '';
    const key = flag.replace(/^--/, '').replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
    const value = Number(argv[i + 1]);
    if (!(key in DEFAULTS) || !Number.isInteger(value) || value < 0) {
      throw new Error(
        `fleet-sim: bad option ${flag} ${String(argv[i + 1])}: expected one of ` +
          `${Object.keys(DEFAULTS)
            .map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`)
            .join(', ')} followed by a whole number`,
      );
    }
    options[key] = value;
  }
  return options as unknown as SimOptions;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Where each receiver's grant queue stands, and the largest total seen. */
class QueueGauge {
  readonly #depth: number[];
  peak = 0;
  constructor(receivers: number) {
    this.#depth = new Array<number>(receivers).fill(0);
  }
  metricsFor(index: number, apiErrors: Map<string, number>): Metrics {
    return {
      put: (name, value, dimensions) => {
        if (name === 'GrantQueueDepth') {
          this.#depth[index] = value;
          this.peak = Math.max(
            this.peak,
            this.#depth.reduce((a, b) => a + b, 0),
          );
        } else if (name === 'ApiErrors') {
          const code = `${dimensions?.Operation ?? '?'}:${dimensions?.Code ?? '?'}`;
          apiErrors.set(code, (apiErrors.get(code) ?? 0) + value);
        }
      },
    };
  }
}

interface SimResult {
  readonly rows: [string, string][];
  readonly notes: string[];
}

export async function main(argv: readonly string[] = []): Promise<void> {
  const options = parseOptions(argv);
  if (options.closeOnConnect > 2) throw new Error('fleet-sim: --close-on-connect takes 0, 1 or 2 (both)');
  const range: ConnectRange = { minMs: options.connectMinMs, maxMs: options.connectMaxMs };
  connectDelayMs(() => 0, range); // validates the range before minutes of simulation
  const modes = options.closeOnConnect === 2 ? [false, true] : [options.closeOnConnect === 1];
  const results: { label: string; result: SimResult }[] = [];
  for (const closeOnConnect of modes) {
    const label = closeOnConnect ? 'closed on connect' : 'held for the window';
    process.stderr.write(`fleet-sim: rules ${label}\n`);
    results.push({ label, result: await simulate(options, closeOnConnect, range) });
  }
  const keys = results[0]!.result.rows.map(([k]) => k);
  const columns = results.map(({ label, result }) => [label, ...result.rows.map(([, v]) => v)]);
  const width = Math.max('figure'.length, ...keys.map((k) => k.length));
  const widths = columns.map((c) => Math.max(...c.map((v) => v.length)));
  console.log(
    `fleet-sim: ${options.devices} devices, ${options.receivers} receivers, moto + EC2 model` +
      (options.closeOnConnect === 1 ? '' : `; rules held for the window`) +
      (options.closeOnConnect === 0
        ? ''
        : `; closed on connect ${range.minMs}-${range.maxMs} ms after the rule`),
  );
  console.log(
    `| ${'figure'.padEnd(width)} | ${columns.map((c, i) => c[0]!.padEnd(widths[i]!)).join(' | ')} |`,
  );
  console.log(`|${'-'.repeat(width + 2)}|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  keys.forEach((k, row) => {
    console.log(
      `| ${k.padEnd(width)} | ${columns.map((c, i) => c[row + 1]!.padEnd(widths[i]!)).join(' | ')} |`,
    );
  });
  for (const { label, result } of results) for (const note of result.notes) console.log(`${label}: ${note}`);
}

async function simulate(
  options: SimOptions,
  closeOnConnect: boolean,
  range: ConnectRange,
): Promise<SimResult> {
  const realStart = performance.now();
  const fleet: FleetParams = {
    devices: options.devices,
    seed: options.seed,
    reconnectHours: 6,
    outageAtSeconds: 120,
    outageFraction: 1,
    outageSeconds: 60,
    stormSpreadSeconds: 120,
    endSeconds: 900,
    replayEverySeconds: 2,
    junkPerSecond: 5,
  };
  const schedule = fleetSchedule(fleet);
  const random = seededRandom(options.seed ^ 0xbeef);
  const time = new VirtualTime(START_MS);
  const groupIds = Array.from({ length: options.groups }, (_, i) => `sg-${(0x10000000 + i).toString(16)}`);
  const ec2 = new ModelledEc2({
    clock: time,
    timers: time,
    groupIds,
    rulesPerGroup: options.rulesPerGroup,
    latencyMs: options.ec2Ms,
  });
  const directory = new FleetDirectory(options.devices, options.seed);

  const moto = await startMoto();
  let inFlight = 0;
  const dynamoClients: DynamoDBClient[] = [];
  const dynamo = () => {
    const client = new DynamoDBClient({
      region: MOTO_REGION,
      endpoint: moto.endpoint,
      credentials: MOTO_CREDENTIALS,
      maxAttempts: 3,
    });
    client.middlewareStack.add(
      (next) => async (args) => {
        inFlight++;
        try {
          return await next(args);
        } finally {
          inFlight--;
        }
      },
      { step: 'initialize', name: 'fleetSimInFlight' },
    );
    dynamoClients.push(client);
    return client;
  };
  const setup = dynamo();
  await createTable(setup, 'nonces', 'ttl');
  await createTable(setup, 'grants', 'ttl');

  const gauge = new QueueGauge(options.receivers);
  const apiErrors = new Map<string, number>();
  const failures = { queueFull: 0, expiredInQueue: 0, other: [] as string[] };
  // How long rules stayed: from the rule in place ('grant.opened') to the rule gone ('grant.revoked'), per address.
  const openedAt = new Map<string, number>();
  const ruleLife: number[] = [];
  const closedBy = new Map<string, number>();
  const audit: AuditSink = {
    write(event: AuditEvent) {
      if (event.type === 'grant.opened') openedAt.set(event.source, event.time);
      if (event.type === 'grant.revoked') {
        closedBy.set(event.reason, (closedBy.get(event.reason) ?? 0) + 1);
        const at = openedAt.get(event.source);
        openedAt.delete(event.source);
        if (at !== undefined && event.reason !== 'shutdown') ruleLife.push(event.time - at);
      }
      if (event.type !== 'grant.failed') return;
      if (event.error.includes('GrantQueueFullError')) failures.queueFull++;
      else if (event.error.includes('GrantNotOpenedError')) failures.expiredInQueue++;
      else failures.other.push(event.error);
    },
  };
  const receivers: { deps: WiredReceiverDeps; firewall: SecurityGroupFirewall }[] = [];
  for (let r = 0; r < options.receivers; r++) {
    const client = dynamo();
    const firewall = new SecurityGroupFirewall({
      ec2: ec2.client,
      securityGroupIds: groupIds,
      brokerAccess: [{ protocol: 'tcp', port: 8883 }],
      clock: time,
      timers: time,
      retry: {
        maxAttempts: options.attempts,
        baseDelayMs: 200,
        maxDelayMs: 20_000,
        sleep: (ms) => time.sleep(ms),
        random,
      },
      metrics: gauge.metricsFor(r, apiErrors),
      grantStore: new DynamoGrantStore({ dynamodb: client, tableName: 'grants' }),
      rulesPerGroup: options.rulesPerGroup,
      maxQueuedRules: options.queue,
      coalesceWindowMs: options.coalesceMs,
    });
    const deps = createReceiverDeps({
      directory,
      nonces: new DynamoNonceStore({ dynamodb: client, tableName: 'nonces' }),
      firewall,
      audit,
      clock: time,
      timers: time,
      config: { defaultGrantSeconds: options.grantSeconds, clockWindowMs: 60_000 },
      rejectAudit: false,
    });
    receivers.push({ deps, firewall });
  }

  // Tallies.
  const reasons = new Map<string, number>();
  let knocks = 0;
  let accepted = 0;
  let pending = 0;
  const latency = { steady: [] as number[], storm: [] as number[] };
  const episodeStart = new Map<number, { at: number; storm: boolean; attempts: number }>();
  const recent: { bytes: Uint8Array; address: string; at: number }[] = [];
  const granted = new Set<number>();
  const grantedAt = new Map<number, number>();
  const stormDevices = new Set<number>();
  const refusedForGood = new Set<number>();

  const receiverFor = (address: string, port: number) => {
    let h = port;
    for (let i = 0; i < address.length; i++) h = (Math.imul(h, 31) + address.charCodeAt(i)) >>> 0;
    return receivers[h % receivers.length]!;
  };

  const deliver = (
    bytes: Uint8Array,
    address: string,
    onOutcome?: (outcome: Outcome, receiver: (typeof receivers)[number]) => void,
  ) => {
    const port = 1024 + Math.floor(random() * 60_000);
    const receiver = receiverFor(address, port);
    pending++;
    void handleDatagram(bytes, { address, family: 4, port }, receiver.deps).then((outcome) => {
      pending--;
      if (outcome.ok) accepted++;
      else reasons.set(outcome.reason, (reasons.get(outcome.reason) ?? 0) + 1);
      onOutcome?.(outcome, receiver);
    });
  };

  // Closed on connect: the device's MQTT session is up a moment after its rule is; the broker's signal reaches the
  // receiver that opened the rule (docs/scaling.md: closed on connect is kept to the receiver holding the claims).
  const sessions = { reported: 0, closedRules: 0, pending: 0 };
  const connect = (device: number, address: string, receiver: (typeof receivers)[number]) => {
    sessions.pending++;
    time.setTimeout(
      () => {
        sessions.reported++;
        void receiver.deps.grants.sessionEstablished(fleetDeviceId(device), address).then((closed) => {
          sessions.pending--;
          sessions.closedRules += closed.length;
        });
      },
      connectDelayMs(random, range),
    );
  };

  const knock = (device: number, storm: boolean) => {
    knocks++;
    if (storm) stormDevices.add(device);
    const episode = episodeStart.get(device) ?? { at: time.now(), storm, attempts: 0 };
    episode.attempts++;
    episodeStart.set(device, episode);
    const key = directory.keyOf(device);
    const nonce = Uint8Array.from({ length: 12 }, () => Math.floor(random() * 256));
    const bytes = encodeBc1(
      { timestampMs: time.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: 8883 }] },
      { keyId: key.keyId, key: key.key, nonce },
    );
    const address = deviceAddress(device);
    recent.push({ bytes, address, at: time.now() });
    if (recent.length > 256) recent.shift();
    deliver(bytes, address, (outcome, receiver) => {
      if (outcome.ok) {
        (episode.storm ? latency.storm : latency.steady).push(time.now() - episode.at);
        granted.add(device);
        if (!grantedAt.has(device)) grantedAt.set(device, time.now());
        if (closeOnConnect) connect(device, address, receiver);
        episodeStart.delete(device);
      } else if (outcome.reason === 'grant-failed') {
        if (episode.attempts <= options.retries) {
          const backoff = (30_000 + random() * 60_000) * 2 ** (episode.attempts - 1);
          time.setTimeout(() => knock(device, episode.storm), Math.min(600_000, backoff));
        } else {
          refusedForGood.add(device);
          episodeStart.delete(device);
        }
      } else {
        episodeStart.delete(device);
      }
    });
  };

  const dispatch = (event: (typeof schedule)[number]) => {
    if (event.kind === 'knock') knock(event.device, event.storm);
    else if (event.kind === 'replay') {
      const fresh = recent.filter((p) => time.now() - p.at < 30_000);
      const captured = fresh[Math.floor(random() * fresh.length)];
      if (captured !== undefined) deliver(captured.bytes, captured.address);
    } else {
      const bytes = Uint8Array.from({ length: 40 + Math.floor(random() * 160) }, () =>
        Math.floor(random() * 256),
      );
      deliver(bytes, `203.0.113.${Math.floor(random() * 256)}`);
    }
  };
  // The schedule is fed in order with one timer for the next event (not a timer per event): the virtual clock
  // then holds only the timers of work in progress, and finding the next one stays cheap.
  let nextEvent = 0;
  const feed = () => {
    for (let event = schedule[nextEvent]; event !== undefined && START_MS + event.at <= time.now(); ) {
      dispatch(event);
      event = schedule[++nextEvent];
    }
    const next = schedule[nextEvent];
    if (next !== undefined) time.setTimeout(feed, START_MS + next.at - time.now());
  };
  time.setTimeout(feed, schedule[0]?.at ?? 0);

  // The sweeper Lambda, every minute: closes what a failed revoke left open (the backstop), as deployed.
  const sweeperStore = new DynamoGrantStore({ dynamodb: dynamo(), tableName: 'grants' });
  let swept = 0;
  let sweeperFailures = 0;
  const sweep = () => {
    void sweepExpiredGrants({
      ec2: ec2.client,
      grants: sweeperStore,
      securityGroupIds: groupIds,
      clock: time,
      retry: { maxAttempts: 8, baseDelayMs: 200, maxDelayMs: 20_000, sleep: (ms) => time.sleep(ms), random },
    }).then((report) => {
      swept += report.revoked.length;
      sweeperFailures += report.failures.length;
    });
    time.setTimeout(sweep, 60_000);
  };
  time.setTimeout(sweep, 60_000);

  const endMs = START_MS + fleet.endSeconds * 1000;
  let lastReport = performance.now();
  const ruleSamples = new Map<number, number>();
  for (let at = START_MS; at < endMs; ) {
    const nextSample = RULE_SAMPLES_S.map((s) => START_MS + s * 1000).find((t) => t > at) ?? endMs;
    at = Math.min(endMs, at + 30_000, nextSample);
    await time.run(at, { inFlight: () => inFlight, quantumMs: 10 });
    const second = (at - START_MS) / 1000;
    if (RULE_SAMPLES_S.includes(second)) ruleSamples.set(second, ec2.rules().now);
    if (performance.now() - lastReport > 15_000) {
      lastReport = performance.now();
      process.stderr.write(
        `  [${((performance.now() - realStart) / 1000).toFixed(0)} s real] virtual ${((at - START_MS) / 1000).toFixed(0)} s, ` +
          `${knocks} knocks, ${accepted} accepted, ${ec2.rules().now} rules\n`,
      );
    }
  }
  // The end of traffic: what is still waiting is queued, explicitly.
  const queuedAtEnd = receivers.reduce((n, r) => n + r.firewall.queueDepth, 0);
  const pendingAtEnd = pending;
  const store = new DynamoGrantStore({ dynamodb: setup, tableName: 'grants' });
  const rulesAtEnd = ec2.rules().now;

  // Drain: close the receivers (waiting grants are refused explicitly), then let every open grant expire.
  // (close() flushes through the EC2 model, whose answers need virtual time to pass: run it meanwhile; the
  // sweeper runs at least once more.)
  const closed = Promise.all(receivers.map((r) => r.firewall.close()));
  await time.run(time.now() + (options.grantSeconds + 90) * 1000, {
    inFlight: () => inFlight,
    quantumMs: 10,
  });
  await closed;
  // Every knock has an answer by now (a grant still pending here would be lost); table and rules agree.
  const lost = pending + sessions.pending;
  const active = new Set((await store.listActive(time.now())).map((g) => `${g.address}/32`));
  const rules = new Set(ec2.cidrs());
  const tableMatchesRules = active.size === rules.size && [...rules].every((c) => active.has(c));
  const rulesAfterDrain = ec2.rules().now;
  const tableAfterDrain = (await store.listActive(time.now())).length;
  for (const client of dynamoClients) client.destroy();
  ec2.restore();
  await moto.stop();

  const steady = latency.steady.sort((a, b) => a - b);
  const life = ruleLife.sort((a, b) => a - b);
  const stormGrantedBy = (seconds: number) =>
    [...stormDevices].filter(
      (d) => (grantedAt.get(d) ?? Number.POSITIVE_INFINITY) <= START_MS + seconds * 1000,
    ).length;
  const storm = latency.storm.sort((a, b) => a - b);
  const calls = ec2.counts();
  const callText = (action: string) => {
    const c = calls[action];
    if (c === undefined) return '0';
    const throttled = c.errors.RequestLimitExceeded ?? 0;
    return `${c.calls}${throttled > 0 ? ` (${throttled} throttled)` : ''}`;
  };
  const totalCalls = Object.values(calls).reduce((n, c) => n + c.calls, 0);
  const stormNotGranted = [...stormDevices].filter((d) => !granted.has(d)).length;
  const unexpected = [...reasons].filter(([reason]) => !EXPECTED_REJECTIONS.has(reason));
  // Answers the firewall handles by design: throttling (retried) and a group found full (next group).
  const handled = (code: string) =>
    code.endsWith('RequestLimitExceeded') || code.endsWith('RulesPerSecurityGroupLimitExceeded');
  const quotaRaces = [...apiErrors]
    .filter(([code]) => code.endsWith('RulesPerSecurityGroupLimitExceeded'))
    .reduce((n, [, c]) => n + c, 0);
  const errors =
    failures.other.length +
    sweeperFailures +
    unexpected.reduce((n, [, c]) => n + c, 0) +
    [...apiErrors].filter(([code]) => !handled(code)).reduce((n, [, c]) => n + c, 0);
  const seconds = (performance.now() - realStart) / 1000;
  const ms = (v: number) => (Number.isNaN(v) ? 'n/a' : `${(v / 1000).toFixed(2)} s`);

  const rows: [string, string][] = [
    ['devices / receivers', `${options.devices} / ${options.receivers}`],
    [
      'grant groups x rules per group (per family)',
      `${options.groups} x ${options.rulesPerGroup} = ${options.groups * options.rulesPerGroup}`,
    ],
    [
      'grant window / coalescing window / receiver queue / device retries',
      `${options.grantSeconds} s / ${options.coalesceMs} ms / ${options.queue} / ${options.retries}`,
    ],
    ['EC2 call attempts when throttled (200 ms base, 20 s cap, full jitter)', String(options.attempts)],
    ['simulated time', `${fleet.endSeconds} s (storm: ${stormDevices.size} devices from t=180 s over 120 s)`],
    ['knocks sent (devices)', String(knocks)],
    ['knocks accepted (rule opened)', String(accepted)],
    ['replays caught (shared nonce table)', String(reasons.get('replay') ?? 0)],
    [
      'junk dropped',
      String(
        [...reasons].filter(([r]) => r !== 'replay' && r !== 'grant-failed').reduce((n, [, c]) => n + c, 0),
      ),
    ],
    ['EC2 calls (total)', String(totalCalls)],
    ['  AuthorizeSecurityGroupIngress', callText('AuthorizeSecurityGroupIngress')],
    ['  RevokeSecurityGroupIngress', callText('RevokeSecurityGroupIngress')],
    ['  UpdateSecurityGroupRuleDescriptionsIngress', callText('UpdateSecurityGroupRuleDescriptionsIngress')],
    ['  DescribeSecurityGroups', callText('DescribeSecurityGroups')],
    ['largest grant queue (all receivers)', String(gauge.peak)],
    [
      'knock to rule, steady devices p50 / p99',
      `${ms(percentile(steady, 50))} / ${ms(percentile(steady, 99))}`,
    ],
    ['knock to rule, storm devices p50 / p99', `${ms(percentile(storm, 50))} / ${ms(percentile(storm, 99))}`],
    ['rules in use: peak / at end of traffic', `${ec2.rules().peak} / ${rulesAtEnd}`],
    ['storm devices granted', `${stormDevices.size - stormNotGranted} of ${stormDevices.size}`],
    ['storm devices granted by 10 / 15 simulated minutes', `${stormGrantedBy(600)} / ${stormGrantedBy(900)}`],
    [
      `rules in use at t = ${RULE_SAMPLES_S.join(', ')} s`,
      RULE_SAMPLES_S.map((s) => String(ruleSamples.get(s) ?? '?')).join(', '),
    ],
    [
      'how long rules stayed (opened to revoked) p50 / p99',
      `${ms(percentile(life, 50))} / ${ms(percentile(life, 99))}`,
    ],
    [
      'rules closed: on connect / window ended / other',
      `${closedBy.get('connected') ?? 0} / ${closedBy.get('expired') ?? 0} / ` +
        `${[...closedBy].filter(([r]) => r !== 'connected' && r !== 'expired').reduce((n, [, c]) => n + c, 0)}`,
    ],
    [
      'sessions reported to the receiver (closed on connect)',
      closeOnConnect ? String(sessions.reported) : 'n/a',
    ],
    ['refused explicitly: queue full', String(failures.queueFull)],
    ['refused explicitly: expired while queued', String(failures.expiredInQueue)],
    ['still queued at end of traffic (GrantQueueDepth)', String(queuedAtEnd)],
    ['in progress at end of traffic (coalescing, EC2 retries, queue)', String(pendingAtEnd)],
    ['group found full by a receiver (moved on)', String(quotaRaces)],
    ['rules closed by the sweeper (backstop)', String(swept)],
    ['errors', String(errors)],
    ['lost grants (knocks or sessions never answered after the drain)', String(lost)],
    ['grants table = rules after the drain', tableMatchesRules ? 'yes' : 'NO'],
    ['rules / table items after the last expiry', `${rulesAfterDrain} / ${tableAfterDrain}`],
    ['real time', `${seconds.toFixed(0)} s`],
  ];
  const notes: string[] = [];
  if (failures.other.length > 0)
    notes.push(`unexpected grant failures (first 5): ${JSON.stringify(failures.other.slice(0, 5))}`);
  if (unexpected.length > 0)
    notes.push(`unexpected rejections: ${JSON.stringify(Object.fromEntries(unexpected))}`);
  const apiErrorList = [...apiErrors].filter(([code]) => !handled(code));
  if (apiErrorList.length > 0) notes.push(`API errors: ${JSON.stringify(Object.fromEntries(apiErrorList))}`);
  return { rows, notes };
}

if (process.argv[1]?.endsWith('fleet-sim.ts')) {
  await main(process.argv.slice(2));
}
