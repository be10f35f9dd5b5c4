/**
 * Fleet simulation: 100,000 devices knocking on several in-process receivers, as behind the UDP load balancer.
 * Each receiver is the real pipeline (handleDatagram, GrantManager, SecurityGroupFirewall with its coalescing,
 * spreading, queueing and retries) with the real DynamoNonceStore and DynamoGrantStore on a real DynamoDBClient,
 * and one EC2 model (bench/support/modelled-ec2.ts: per-action token buckets, 50 burst and 5/s for
 * Authorize/Revoke, the rules-per-group quota, EC2's error codes). The nonce and grants tables live in the
 * in-process DynamoDB model (`--dynamo model`, the default: bench/support/modelled-dynamodb.ts, checked against
 * moto by test/bench/modelled-dynamodb.test.ts) or in one moto server (`--dynamo moto`: python3 -m moto.server,
 * about 20 times slower in real time). Time is virtual (test/support/virtual-time.ts): DynamoDB takes no simulated
 * time on either backend; EC2 calls take `--ec2-ms`. The receivers', devices' and connects' timers run on one
 * virtual timer (bench/fleet/timer-heap.ts). At the end of traffic the firewalls close: knocks still in the
 * pipeline are refused (counted as refused at the drain), then every open grant expires.
 *
 * Traffic (bench/fleet/fleet-model.ts): steady reconnects, a regional outage followed by a reconnect storm of the
 * whole fleet, and a drip of replays and junk. Devices attempt as the device library does
 * (device-client/connect-device.ts; bench/fleet/device-attempts.ts): an attempt is a knock and then
 * DEFAULT_ATTEMPT_TIMEOUT_MS (10 s) to connect. A refused grant (the receiver's queue full, the EC2 budget spent,
 * or expired while waiting) is silent, as for a real device; if the rule (the receiver's ok outcome) comes within
 * the attempt the device connects (below), otherwise the attempt fails at its end and the device knocks again after
 * the library's backoff (full jitter, 1 s doubling to 60 s), at most `--retries` times, and not after the end of
 * traffic. A rule that comes after its attempt ended is an orphan: the device does not use it (counted; the rule
 * closes by its window, or by the device's later session through the same receiver). A scheduled reconnect of a
 * device still trying sends nothing (counted). Every device's episode ends in exactly one of connected, lost (its
 * connect found no rule), refused for good, not retried at the end of traffic; the table checks it.
 *
 * Pacing (`--pacing 1`, the default, as the AWS receiver runs): each receiver paces its EC2 calls with the real
 * client-side AIMD buckets (functions/aws/call-pacer.ts); `--pacing 0` sends calls as soon as planned.
 * Carrier NAT (`--prefixes N`, default 0: one address per device): devices sit behind N carrier /24 pools, each
 * flow from any address of the device's pool (bench/fleet/fleet-model.ts `carrierAddress`), and every device has
 * the prefix policy `grantPrefix: { ipv4: 24 }` (functions/core/grant-prefix.ts), so devices share one rule per
 * /24; the session is reported from another address of the pool than the knock.
 * Placement (`--slot-share 1`, the default, as the scaled stack's receivers do with a share lease,
 * functions/aws/slot-share-lease.ts): receiver i of n keeps to its share of the slots (the firewall's `slotShare`,
 * sg-plan.ts slotShareCaps). `--slot-share 0`: every free slot is every receiver's, and receiver i fills from group
 * i (`--hashed-offsets 0`, the best case) or, with `--hashed-offsets N`, from the offset a receiver without a share
 * draws (`fillOffsetOf` of a random 16-byte id, here drawn from seed N), where two may share a group.
 *
 * Connect (docs/scaling.md, "A rule lives until the session is established"): a device whose rule came within its
 * attempt has its MQTT session a short time after the rule (bench/fleet/connect-model.ts: `--connect-min-ms` to
 * `--connect-max-ms`, uniform, default 300 ms to 1 s). At that moment the simulation checks that a rule for its
 * address (or prefix) is in place: one closed under it (by another receiver's claims, or its window ended) is a
 * lost grant, counted, and that session is not reported. Closed on connect (`--close-on-connect 1`, the default)
 * then tells every receiver, as on AWS where each watches the broker's log, through the real
 * `GrantManager.sessionEstablished`: the claims are shared in the grants table (functions/aws/dynamo-connect-claims.ts),
 * so the release of the device's claim revokes the rule once no device that knocked for it still waits; 0 holds rules for the window; 2 runs the whole simulation twice (0 and 1)
 * and prints them side by side.
 *
 * Prints: knocks accepted, replays caught, junk dropped, EC2 calls (and throttles), largest grant queue, knock to
 * rule for p50/p99 devices (steady and storm), rules in use (peak), explicit refusals, orphaned rules, how the
 * devices' episodes ended, errors, and the checks "no lost grant" (after the drain every knock has its answer; no
 * connect found its rule gone; rules and grants table agree; all revoked); storm devices granted by 10 and 15
 * simulated minutes, rules in use over time, the Authorize calls between those times (successful, ranges per call,
 * throttled, group full), how long rules stayed (opened to revoked, p50/p99), why they closed,
 * and the DynamoDB calls (model only).
 *
 *   npm run bench -- fleet-sim [--dynamo model|moto] [--devices 100000] [--receivers 4] [--groups 5]
 *        [--rules-per-group 200] [--grant-seconds 30] [--queue 1000] [--retries 20] [--ec2-ms 100] [--coalesce-ms 1000] [--attempts 20]
 *        [--close-window-ms 1500] [--slot-wait-ms 0] [--unsent-ms 0] [--contended-ms 0]
 *        [--seed 1] [--pacing 1] [--prefixes 0] [--slot-share 1] [--hashed-offsets 0]
 *        [--close-on-connect 1] [--connect-min-ms 300] [--connect-max-ms 1000]
 * The defaults are the scaled AWS stack's (infra/constructs/receiver.ts: 1 s coalescing, 1.5 s for revokes, 20
 * attempts, a share of the slots per receiver).
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { backoffDelayMs, DEFAULT_ATTEMPT_TIMEOUT_MS } from '../device-client/connect-device.ts';
import { Ec2Pacing } from '../functions/aws/call-pacer.ts';
import { newHolderId } from '../functions/aws/controller-lease.ts';
import { DynamoConnectClaims } from '../functions/aws/dynamo-connect-claims.ts';
import { DynamoGrantStore } from '../functions/aws/dynamo-grant-store.ts';
import { DynamoNonceStore } from '../functions/aws/dynamo-nonce-store.ts';
import type { Metrics } from '../functions/aws/metrics.ts';
import { isThrottling } from '../functions/aws/retry.ts';
import { SecurityGroupFirewall } from '../functions/aws/security-group-firewall.ts';
import { fillOffsetOf, slotShareCaps } from '../functions/aws/sg-plan.ts';
import { prefixOf } from '../functions/core/grant-prefix.ts';
import type { AuditEvent, AuditSink } from '../functions/core/interfaces.ts';
import { handleDatagram, type Outcome } from '../functions/receiver/handle-datagram.ts';
import { createReceiverDeps, type WiredReceiverDeps } from '../functions/receiver/receiver-deps.ts';
import { sweepExpiredGrants } from '../functions/sweeper/sweep.ts';
import {
  SCALED_CLOSE_WINDOW_MS,
  SCALED_COALESCE_MS,
  SCALED_EC2_ATTEMPTS,
} from '../infra/constructs/receiver.ts';
import { encodeBc1 } from '../spa/bc1.ts';
import { createTable, MOTO_CREDENTIALS, MOTO_REGION, startMoto } from '../test/support/moto.ts';
import { VirtualTime } from '../test/support/virtual-time.ts';
import { type ConnectRange, connectDelayMs, DEFAULT_CONNECT_RANGE } from './fleet/connect-model.ts';
import { DeviceAttempts, type Episode } from './fleet/device-attempts.ts';
import { FleetDirectory, fleetDeviceId } from './fleet/fleet-directory.ts';
import {
  carrierAddress,
  deviceAddress,
  type FleetParams,
  fleetSchedule,
  seededRandom,
} from './fleet/fleet-model.ts';
import { TimerHeap } from './fleet/timer-heap.ts';
import { ModelledDynamoDb } from './support/modelled-dynamodb.ts';
import { type Ec2CallRecord, ModelledEc2 } from './support/modelled-ec2.ts';

/** Where the nonce and grants tables live: the in-process model (the default) or a moto server. */
const DYNAMO_BACKENDS = ['model', 'moto'] as const;
type DynamoBackend = (typeof DYNAMO_BACKENDS)[number];

interface SimOptions {
  readonly dynamo: DynamoBackend;
  readonly devices: number;
  readonly receivers: number;
  readonly groups: number;
  readonly rulesPerGroup: number;
  readonly grantSeconds: number;
  readonly queue: number;
  readonly retries: number;
  readonly ec2Ms: number;
  readonly coalesceMs: number;
  /** The firewall's closes-lane window (0: the firewall's default, coalesceMs). */
  readonly closeWindowMs: number;
  /** With pacing, the allows waiting to be sent: the full calls the pacer sends in this long (0: UNSENT_MS). */
  readonly unsentMs: number;
  /** After a "full" answer, keep new rules out of that group this long (0: off, the firewall's default). */
  readonly contendedMs: number;
  /** How long after the knock a grant may still be opened from the slot queue (0: DEFAULT_SLOT_WAIT_MS). */
  readonly slotWaitMs: number;
  /** Attempts per EC2 call when throttled (the receiver's BLACKCLOUD_EC2_ATTEMPTS). */
  readonly attempts: number;
  readonly seed: number;
  /** 0: rules held for the window; 1: closed on connect; 2: both, side by side. */
  readonly closeOnConnect: number;
  readonly connectMinMs: number;
  readonly connectMaxMs: number;
  /** 1: each receiver paces its EC2 calls (call-pacer.ts), as deployed; 0: no pacing. */
  readonly pacing: number;
  /** 0: one address per device; N: devices behind N carrier /24 pools, with prefix grants (/24). */
  readonly prefixes: number;
  /**
   * 0: receiver i fills from group i (the best case); N: from fillOffsetOf of a random id, as deployed receivers do
   * (functions/aws/receiver-main.ts), the ids drawn from seed N, so N picks one draw of offsets.
   */
  readonly hashedOffsets: number;
  /** 1: receiver i of n keeps to its share of the slots (the firewall's slotShare); 0: every slot is everyone's. */
  readonly slotShare: number;
}

const DEFAULTS: SimOptions = {
  dynamo: 'model',
  devices: 100_000,
  receivers: 4,
  groups: 5,
  rulesPerGroup: 200,
  grantSeconds: 30,
  queue: 1000,
  retries: 20,
  ec2Ms: 100,
  coalesceMs: SCALED_COALESCE_MS,
  closeWindowMs: SCALED_CLOSE_WINDOW_MS,
  unsentMs: 0,
  contendedMs: 0,
  slotWaitMs: 0,
  attempts: SCALED_EC2_ATTEMPTS,
  seed: 1,
  closeOnConnect: 1,
  connectMinMs: DEFAULT_CONNECT_RANGE.minMs,
  connectMaxMs: DEFAULT_CONNECT_RANGE.maxMs,
  pacing: 1,
  prefixes: 0,
  hashedOffsets: 0,
  slotShare: 1,
};

/** The carrier pools' prefix grant (docs/scaling.md, "Prefix grants"). */
const CARRIER_PREFIX_LENGTH = 24;

/** Simulated seconds at which the rules in use are sampled (the storm starts at 180 s). */
const RULE_SAMPLES_S = [60, 180, 210, 240, 270, 300, 330, 360, 420, 480, 540, 600, 900];

/**
 * The Authorize calls sent between consecutive sample times (t = 0 to the first, ..., to the last), each interval
 * as `ok calls/ranges per ok call/throttled/full`: where the budget went, and whether calls were full.
 */
function authorizeByInterval(log: readonly Ec2CallRecord[]): string {
  const edges = [0, ...RULE_SAMPLES_S].map((s) => START_MS + s * 1000);
  const out: string[] = [];
  for (let i = 1; i < edges.length; i++) {
    let ok = 0;
    let ranges = 0;
    let throttled = 0;
    let full = 0;
    for (const call of log) {
      if (call.action !== 'AuthorizeSecurityGroupIngress') continue;
      if (call.sentAt < edges[i - 1]! || call.sentAt >= edges[i]!) continue;
      if (call.outcome === 'ok') {
        ok++;
        ranges += call.ranges;
      } else if (call.outcome === 'RequestLimitExceeded') throttled++;
      else if (call.outcome === 'RulesPerSecurityGroupLimitExceeded') full++;
    }
    out.push(`${ok}/${ok === 0 ? 0 : (ranges / ok).toFixed(0)}/${throttled}/${full}`);
  }
  return out.join(', ');
}

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

/** The command-line flag of each option (`closeWindowMs` -> `--close-window-ms`), in DEFAULTS' order. */
export const FLEET_SIM_FLAGS: readonly string[] = Object.keys(DEFAULTS).map(
  (key) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`,
);

function parseOptions(argv: readonly string[]): SimOptions {
  const options: Record<string, number | string> = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i] ?? '';
    const key = flag.replace(/^--/, '').replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
    const text = String(argv[i + 1]);
    if (key === 'dynamo' && (DYNAMO_BACKENDS as readonly string[]).includes(text)) {
      options[key] = text;
      continue;
    }
    const value = Number(text);
    if (key === 'dynamo' || !(key in DEFAULTS) || !Number.isInteger(value) || value < 0) {
      throw new Error(
        `fleet-sim: bad option ${flag} ${text}: expected --dynamo ${DYNAMO_BACKENDS.join('|')}, or one of ` +
          `${FLEET_SIM_FLAGS.filter((f) => f !== '--dynamo').join(', ')} followed by a whole number`,
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
    `fleet-sim: ${options.devices} devices, ${options.receivers} receivers, ` +
      `${options.dynamo === 'model' ? 'DynamoDB model' : 'moto'} + EC2 model` +
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
  // The receivers', the devices' and the connects' timers (thousands at once in the storm) on one virtual timer
  // (bench/fleet/timer-heap.ts): the virtual clock scans all its timers per timer fired.
  const timers = new TimerHeap(time, time);
  const groupIds = Array.from({ length: options.groups }, (_, i) => `sg-${(0x10000000 + i).toString(16)}`);
  const ec2 = new ModelledEc2({
    clock: time,
    timers: time,
    groupIds,
    rulesPerGroup: options.rulesPerGroup,
    latencyMs: options.ec2Ms,
  });
  const carrier = options.prefixes > 0;
  if (carrier) carrierAddress(0, options.prefixes, () => 0); // validates --prefixes before minutes of simulation
  const directory = new FleetDirectory(
    options.devices,
    options.seed,
    carrier ? { ipv4: CARRIER_PREFIX_LENGTH } : undefined,
  );
  const addressOf = (device: number) =>
    carrier ? carrierAddress(device, options.prefixes, random) : deviceAddress(device);

  // DynamoDB: the model answers in-process, at once (one shared client); moto over HTTP (a client per user, each
  // call counted in flight so virtual time waits for its answer). Either takes no simulated time.
  const moto = options.dynamo === 'moto' ? await startMoto() : undefined;
  const dynamoModel = moto === undefined ? new ModelledDynamoDb() : undefined;
  let inFlight = 0;
  const dynamoClients: DynamoDBClient[] = [];
  const dynamo = () => {
    if (dynamoModel !== undefined) return dynamoModel.client;
    if (moto === undefined) throw new Error('fleet-sim: no DynamoDB backend');
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
  const failures = { queueFull: 0, budgetFull: 0, expiredInQueue: 0, atDrain: 0, other: [] as string[] };
  /** From the end of traffic on: the receivers' firewalls are closed (knocks still in the pipeline are refused). */
  let draining = false;
  const audited = { opened: 0, extended: 0 };
  // How long rules stayed: from the rule in place ('grant.opened') to the rule gone ('grant.revoked'), per address.
  const openedAt = new Map<string, number>();
  const ruleLife: number[] = [];
  const closedBy = new Map<string, number>();
  /** The reason of each target's last revoke by a receiver (to say why a connect found no rule). */
  const lastRevoked = new Map<string, string>();
  /** Lost grants by the last receiver revoke of their target ('none': closed by the sweeper). */
  const lostBy = new Map<string, number>();
  const audit: AuditSink = {
    write(event: AuditEvent) {
      if (event.type === 'grant.opened') {
        audited.opened++;
        openedAt.set(event.source, event.time);
      }
      if (event.type === 'grant.extended') audited.extended++;
      if (event.type === 'grant.revoked') {
        lastRevoked.set(event.source, event.reason);
        closedBy.set(event.reason, (closedBy.get(event.reason) ?? 0) + 1);
        const at = openedAt.get(event.source);
        openedAt.delete(event.source);
        if (at !== undefined && event.reason !== 'shutdown') ruleLife.push(event.time - at);
      }
      if (event.type !== 'grant.failed') return;
      if (event.error.includes('GrantQueueFullError') && event.error.includes('wait to be sent'))
        failures.budgetFull++;
      else if (event.error.includes('GrantQueueFullError')) failures.queueFull++;
      else if (event.error.includes('GrantNotOpenedError')) failures.expiredInQueue++;
      else if (draining && event.error.includes('firewall is closed')) failures.atDrain++;
      else failures.other.push(event.error);
    },
  };
  const receivers: { deps: WiredReceiverDeps; firewall: SecurityGroupFirewall }[] = [];
  // As deployed: each receiver's lease holder id from newHolderId, here on random bytes drawn from the seed.
  const idRandom = seededRandom(options.hashedOffsets);
  const idBytes = {
    randomBytes: (n: number) => Uint8Array.from({ length: n }, () => Math.floor(idRandom() * 256)),
  };
  const fillOffsets = Array.from({ length: options.receivers }, (_, r) =>
    options.hashedOffsets === 0 ? r : fillOffsetOf(newHolderId(idBytes)),
  );
  for (let r = 0; r < options.receivers; r++) {
    const client = dynamo();
    const pacing =
      options.pacing === 0
        ? undefined
        : new Ec2Pacing({ clock: time, sleep: (ms) => time.sleep(ms), isThrottling });
    const firewall = new SecurityGroupFirewall({
      ec2: ec2.client,
      securityGroupIds: groupIds,
      ...(options.slotShare === 0
        ? { fillOffset: fillOffsets[r]! }
        : { slotShare: { index: r, of: options.receivers } }),
      brokerAccess: [{ protocol: 'tcp', port: 8883 }],
      clock: time,
      timers,
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
      ...(options.closeWindowMs === 0 ? {} : { closeWindowMs: options.closeWindowMs }),
      ...(options.slotWaitMs === 0 ? {} : { maxSlotWaitMs: options.slotWaitMs }),
      ...(options.unsentMs === 0 ? {} : { maxUnsentMs: options.unsentMs }),
      contendedMs: options.contendedMs,
      maxUnsentRules: options.queue,
      pacing,
    });
    const deps = createReceiverDeps({
      directory,
      nonces: new DynamoNonceStore({ dynamodb: client, tableName: 'nonces' }),
      firewall,
      audit,
      clock: time,
      timers,
      config: { defaultGrantSeconds: options.grantSeconds, clockWindowMs: 60_000 },
      rejectAudit: false,
      connectClaims: new DynamoConnectClaims({ dynamodb: client, tableName: 'grants' }),
    });
    receivers.push({ deps, firewall });
  }

  const endMs = START_MS + fleet.endSeconds * 1000;
  // Tallies.
  const reasons = new Map<string, number>();
  let knocks = 0;
  let accepted = 0;
  let pending = 0;
  const latency = { steady: [] as number[], storm: [] as number[] };
  /** First knock of the episode to the connection passing the firewall. */
  const connectLatency = { steady: [] as number[], storm: [] as number[] };
  /** Steady devices' knock to rule with the knock's time: the steady state is outside the storm's busy period. */
  const steadyAt: { at: number; ms: number }[] = [];
  let stormFirstKnock = Number.POSITIVE_INFINITY;
  let stormLastGrant = Number.NEGATIVE_INFINITY;
  /** Scheduled reconnects of a device already in an episode (it is still trying: nothing to reconnect). */
  let alreadyTrying = 0;
  const recent: { bytes: Uint8Array; address: string; at: number }[] = [];
  const granted = new Set<number>();
  const grantedAt = new Map<number, number>();
  const stormDevices = new Set<number>();

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

  // The device's connection passes the firewall when a rule for the address it leaves from (or its prefix) is in
  // place at the instant it dials (bench/fleet/device-attempts.ts); the tracked connection then outlives the rule.
  // Its MQTT session is up `connectDelayMs` later (TLS, CONNECT/CONNACK); the broker's signal then reaches every
  // receiver (docs/scaling.md, "The signal on AWS"), and the claims they share decide when the rule closes.
  const sessions = { reported: 0, closedRules: 0, pending: 0 };
  /** The address each device's last dial left from (behind carrier NAT, any address of its pool). */
  const dialedFrom = new Map<number, string>();
  const cidrOf = (address: string) => (carrier ? prefixOf(address, CARRIER_PREFIX_LENGTH) : `${address}/32`);
  const admits = (device: number): boolean => {
    const address = addressOf(device);
    dialedFrom.set(device, address);
    const cidr = cidrOf(address);
    return cidr !== undefined && ec2.hasRule(cidr);
  };
  const connected = (device: number, episode: Episode) => {
    const address = dialedFrom.get(device) ?? addressOf(device);
    dialedFrom.delete(device);
    const waited = time.now() - episode.at;
    (episode.storm ? connectLatency.storm : connectLatency.steady).push(waited);
    if (!grantedAt.has(device)) grantedAt.set(device, time.now());
    granted.add(device);
    if (!closeOnConnect) return;
    sessions.pending++;
    timers.setTimeout(
      () => {
        sessions.reported++;
        // Every receiver watches the broker's log (functions/aws/receiver-main.ts), so each is told of every
        // session; the claims are shared in the grants table (functions/aws/dynamo-connect-claims.ts).
        void Promise.all(
          receivers.map((r) => r.deps.grants.sessionEstablished(fleetDeviceId(device), address)),
        ).then((lists) => {
          sessions.pending--;
          sessions.closedRules += lists.flat().length;
        });
      },
      connectDelayMs(random, range),
    );
  };
  const lostGrant = (device: number) => {
    const address = dialedFrom.get(device) ?? addressOf(device);
    const target = carrier ? (cidrOf(address) ?? address) : address;
    const by = lastRevoked.get(target) ?? 'none (the sweeper)';
    lostBy.set(by, (lostBy.get(by) ?? 0) + 1);
  };

  // Each device's attempts, as the device library makes them (bench/fleet/device-attempts.ts): a knock, then dials
  // within DEFAULT_ATTEMPT_TIMEOUT_MS; a refused knock is silent, so a failed attempt is followed by a re-knock after
  // the library's backoff, at most `--retries`, never after the end of traffic.
  const devices: DeviceAttempts = new DeviceAttempts({
    clock: time,
    timers,
    timeoutMs: DEFAULT_ATTEMPT_TIMEOUT_MS,
    retries: options.retries,
    endMs,
    backoffMs: (failures) => backoffDelayMs(failures, random),
    admits,
    connected,
    lost: lostGrant,
    knock: (device, attempt) => {
      knocks++;
      const { episode } = attempt;
      if (episode.storm) stormFirstKnock = Math.min(stormFirstKnock, time.now());
      const key = directory.keyOf(device);
      const nonce = Uint8Array.from({ length: 12 }, () => Math.floor(random() * 256));
      const bytes = encodeBc1(
        { timestampMs: time.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: 8883 }] },
        { keyId: key.keyId, key: key.key, nonce },
      );
      const address = addressOf(device);
      recent.push({ bytes, address, at: time.now() });
      if (recent.length > 256) recent.shift();
      deliver(bytes, address, (outcome) => {
        // A refusal is silent (the attempt runs on); a rule after the attempt ended is an orphan.
        if (!outcome.ok || !attempt.granted()) return;
        const waited = time.now() - episode.at;
        (episode.storm ? latency.storm : latency.steady).push(waited);
        if (episode.storm) stormLastGrant = Math.max(stormLastGrant, time.now());
        else steadyAt.push({ at: episode.at, ms: waited });
      });
    },
  });

  const knock = (device: number, storm: boolean) => {
    if (storm) stormDevices.add(device);
    if (!devices.start(device, storm)) alreadyTrying++;
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
          `${knocks} knocks, ${accepted} accepted, ${ec2.rules().now} rules, ${timers.pending} timers\n`,
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
  draining = true;
  const closed = Promise.all(receivers.map((r) => r.firewall.close()));
  await time.run(time.now() + (options.grantSeconds + 90) * 1000, {
    inFlight: () => inFlight,
    quantumMs: 10,
  });
  await closed;
  // Every knock has an answer by now (a grant still pending here would be lost); table and rules agree.
  const lost = pending + sessions.pending;
  const episodes = devices.stats();
  const ended = episodes.ended;
  const episodesEnded = Object.values(ended).reduce((n, c) => n + c, 0);
  const active = new Set(
    (await store.listActive(time.now())).map((g) => `${g.address}/${g.prefixLength ?? 32}`),
  );
  const rules = new Set(ec2.cidrs());
  const tableMatchesRules = active.size === rules.size && [...rules].every((c) => active.has(c));
  const rulesAfterDrain = ec2.rules().now;
  const tableAfterDrain = (await store.listActive(time.now())).length;
  for (const client of dynamoClients) client.destroy();
  const dynamoCalls = dynamoModel?.counts();
  dynamoModel?.restore();
  ec2.restore();
  await moto?.stop();

  const calls = ec2.counts();
  const steady = latency.steady.sort((a, b) => a - b);
  // The steady state: steady devices' knocks before the storm's first knock or after its last grant.
  const steadyState = steadyAt
    .filter(({ at }) => at < stormFirstKnock || at > stormLastGrant)
    .map(({ ms }) => ms)
    .sort((a, b) => a - b);
  const okCalls = (action: string) => {
    const c = calls[action];
    return c === undefined ? 0 : c.calls - Object.values(c.errors).reduce((n, e) => n + e, 0);
  };
  const life = ruleLife.sort((a, b) => a - b);
  const stormGrantedBy = (seconds: number) =>
    [...stormDevices].filter(
      (d) => (grantedAt.get(d) ?? Number.POSITIVE_INFINITY) <= START_MS + seconds * 1000,
    ).length;
  const storm = latency.storm.sort((a, b) => a - b);
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
      'DynamoDB (nonce and grants tables)',
      options.dynamo === 'model' ? 'in-process model (bench/support/modelled-dynamodb.ts)' : 'moto server',
    ],
    [
      'grant groups x rules per group (per family)',
      `${options.groups} x ${options.rulesPerGroup} = ${options.groups * options.rulesPerGroup}`,
    ],
    [
      'grant window / coalescing window (opens, closes) / receiver queue / device retries',
      `${options.grantSeconds} s / ${options.coalesceMs} ms, ${options.closeWindowMs === 0 ? options.coalesceMs : options.closeWindowMs} ms / ${options.queue} / ${options.retries}`,
    ],
    ['EC2 call attempts when throttled (200 ms base, 20 s cap, full jitter)', String(options.attempts)],
    ['client-side pacing of EC2 calls (AIMD, call-pacer.ts)', options.pacing === 0 ? 'off' : 'on'],
    options.slotShare === 0
      ? [
          "each receiver's first group (fill offset)",
          `${fillOffsets.map((o) => groupIds[o % groupIds.length]).join(', ')}${options.hashedOffsets === 0 ? ' (by index)' : ` (hashed, draw ${options.hashedOffsets})`}`,
        ]
      : [
          "each receiver's share of the slots (rules per group, slotShareCaps)",
          Array.from({ length: options.receivers }, (_, r) =>
            slotShareCaps(options.groups, options.rulesPerGroup, r, options.receivers).join('+'),
          ).join(', '),
        ],
    [
      'source addresses',
      carrier
        ? `${options.prefixes} carrier /24 pools, prefix grants /${CARRIER_PREFIX_LENGTH}`
        : 'one per device (/32 grants)',
    ],
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
    [
      'rules per call: Authorize / Revoke (mean of successful calls; largest)',
      `${(ec2.applied.authorized / Math.max(1, okCalls('AuthorizeSecurityGroupIngress'))).toFixed(1)} / ` +
        `${(ec2.applied.revoked / Math.max(1, okCalls('RevokeSecurityGroupIngress'))).toFixed(1)} ` +
        `(${ec2.stats.largestCall})`,
    ],
    ['largest grant queue (all receivers)', String(gauge.peak)],
    [
      'knock to rule, steady state p50 / p99 (steady devices outside the storm)',
      `${ms(percentile(steadyState, 50))} / ${ms(percentile(steadyState, 99))} (${steadyState.length} grants)`,
    ],
    [
      'knock to rule, steady devices p50 / p99 (whole run)',
      `${ms(percentile(steady, 50))} / ${ms(percentile(steady, 99))}`,
    ],
    ['knock to rule, storm devices p50 / p99', `${ms(percentile(storm, 50))} / ${ms(percentile(storm, 99))}`],
    [
      "first knock to connection (the episode's re-knocks included), steady / storm p50 / p99",
      `${ms(
        percentile(
          connectLatency.steady.sort((a, b) => a - b),
          50,
        ),
      )} / ` +
        `${ms(percentile(connectLatency.steady, 99))}; ` +
        `${ms(
          percentile(
            connectLatency.storm.sort((a, b) => a - b),
            50,
          ),
        )} / ${ms(percentile(connectLatency.storm, 99))}`,
    ],
    ['rules in use: peak / at end of traffic', `${ec2.rules().peak} / ${rulesAtEnd}`],
    ['storm devices granted', `${stormDevices.size - stormNotGranted} of ${stormDevices.size}`],
    [
      'storm: first knock to last grant',
      stormDevices.size === 0
        ? 'n/a'
        : `t = ${((stormFirstKnock - START_MS) / 1000).toFixed(0)} s to ${((stormLastGrant - START_MS) / 1000).toFixed(1)} s`,
    ],
    [
      "rules opened after the attempt's last dial (orphans: closed by the device's later session or their window)",
      String(episodes.orphans),
    ],
    [
      'storm devices connected (a rule in place when they dialled) by 10 / 15 simulated minutes',
      `${stormGrantedBy(600)} / ${stormGrantedBy(900)}`,
    ],
    [
      `rules in use at t = ${RULE_SAMPLES_S.join(', ')} s`,
      RULE_SAMPLES_S.map((s) => String(ruleSamples.get(s) ?? '?')).join(', '),
    ],
    [
      'Authorize between those times: successful calls / ranges per call / throttled / group full',
      authorizeByInterval(ec2.callLog()),
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
    [
      "lost grants: granted within the device's attempt, the rule gone at its next dials (last closed by)",
      `${episodes.lost}${lostBy.size === 0 ? '' : ` (${[...lostBy].map(([by, n]) => `${by}: ${n}`).join(', ')})`}`,
    ],
    [
      'rules opened / grants extended (audited)',
      `${audited.opened} / ${audited.extended}` +
        (carrier ? ` (${(accepted / Math.max(1, audited.opened)).toFixed(1)} accepted knocks per rule)` : ''),
    ],
    ['refused explicitly: queue full', String(failures.queueFull)],
    ['refused explicitly: EC2 budget spent (rules waiting to be sent)', String(failures.budgetFull)],
    [
      'device episodes: connected / refused for good / not retried at end of traffic',
      `${ended.connected} / ${ended.refusedForGood} / ${ended.notRetriedAtEnd}`,
    ],
    [
      'every episode ended in exactly one of those (episodes started / unfinished after the drain)',
      `${episodes.running === 0 && episodes.started === episodesEnded ? 'yes' : 'NO'} (${episodes.started} / ${episodes.running})`,
    ],
    ['scheduled reconnects of a device already trying (no knock)', String(alreadyTrying)],
    ['refused explicitly: expired while queued', String(failures.expiredInQueue)],
    ['refused at the drain (knocks in the pipeline when the firewalls closed)', String(failures.atDrain)],
    ['still queued at end of traffic (GrantQueueDepth)', String(queuedAtEnd)],
    ['in progress at end of traffic (coalescing, EC2 retries, queue)', String(pendingAtEnd)],
    ['group found full by a receiver (moved on)', String(quotaRaces)],
    ['rules closed by the sweeper (backstop)', String(swept)],
    ['errors', String(errors)],
    ['lost grants (knocks or sessions never answered after the drain)', String(lost)],
    ['grants table = rules after the drain', tableMatchesRules ? 'yes' : 'NO'],
    ['rules / table items after the last expiry', `${rulesAfterDrain} / ${tableAfterDrain}`],
    [
      'DynamoDB calls: Put / Get / Delete / Update / Scan (model only)',
      dynamoCalls === undefined
        ? 'n/a (moto)'
        : ['PutItem', 'GetItem', 'DeleteItem', 'UpdateItem', 'Scan']
            .map((c) => String(dynamoCalls[c]?.calls ?? 0))
            .join(' / '),
    ],
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
