/**
 * The receive pipeline: one datagram in, one `Outcome` out ([BC1-1]..[BC1-9], docs/protocol.md).
 *
 * Contract:
 * - Steps run in cost order and stop at the first failure: frame (length, magic / format) → failure limit →
 *   key lookup (BC1: by key id; fwknop: trial HMAC over the directory's candidates) → AEAD / HMAC and
 *   decrypt → parse → clock window and the nonce store's start-time guard → policy → replay record (bounded
 *   per device) → per-device knock limit → grant. Nothing is parsed before it is authenticated; the nonce store
 *   is written only for authentic, fresh, allowed packets (so unauthenticated junk never fills it).
 * - The failure limit [BC1-2] is a token bucket per (source address or IPv6 /64, BC1 key id | fwknop), checked
 *   before any lookup or crypto but spent only by packets that fail authentication (unknown key, disabled
 *   device, inactive key, AEAD / HMAC, parse): spoofed junk from a device's address, which cannot carry a key
 *   id it does not know, never spends the device's bucket, and accepted knocks spend nothing.
 * - Per device: the nonce store bounds its share ('nonce-share-full') and `deviceRateLimiter` (key: device id)
 *   its accepted knocks ('device-rate-limited'), both after the replay check, so a replayed packet costs the
 *   device nothing.
 * - Every rejection is a value `{ ok: false, reason }` with a `RejectReason`, counted (`rejected`,
 *   `rejected.<reason>`) and audited as 'packet.rejected' (unless the optional `rejectAuditLimiter` is exhausted:
 *   then counted as `audit.suppressed`). Every acceptance is counted and audited as 'packet.accepted' with a
 *   hash of the replay id. Audit events never carry key material.
 * - A NonceStore or DeviceDirectory that throws fails closed ('nonce-store-unavailable', 'directory-unavailable'):
 *   no grant.
 * - `handleDatagram` never throws and never answers: anything unexpected becomes 'internal-error'. Its first,
 *   synchronous steps (frame, rate limit) are also exported as `screenDatagram`, so the socket loop rejects junk
 *   without a promise; `continueDatagram` runs the rest.
 * - The pipeline is also exported in its two halves, so reader worker threads can run the CPU half in parallel
 *   (reader-workers.ts): `authenticateScreened` (key lookup, AEAD / HMAC, parse, clock, policy: needs only the
 *   `ScreeningDeps`) yields a `Candidate` that carries no key material, and `decideCandidate` (replay record,
 *   per-device limit, grant: the `DecidingDeps`, one owner) decides it. `continueDatagram` = the two in turn.
 * - The plain profile: an accepted BC1 knock of a plain device (`Device.transport`) hands its one-time connect
 *   credential (connect-credential.ts, derived in the authenticating half, where the key is; the candidate carries
 *   the credential, never the key), bound to the observed source and the knock's window, to
 *   `deps.connectCredentials` before the grant opens. The credential is in no outcome, audit event or counter.
 * - I/O only through `deps` (clock, directory, nonces, grants, audit, counters, rate limiter, credentials).
 */
import { createHash } from 'node:crypto';
import { type Bc1Header, bc1ReplayId, decodeBc1, readBc1Header } from '../../spa/bc1.ts';
import {
  decodeFwknopFrame,
  type FwknopFrame,
  type FwknopFrameReason,
  type FwknopMessage,
  fwknopReplayId,
  looksLikeFwknop,
  readFwknopFrame,
} from '../../spa/fwknop.ts';
import { BC1_MAGIC } from '../../spa/limits.ts';
import { ok, type Result, reject } from '../../spa/result.ts';
import type { AccessEntry, IpAddress } from '../../spa/types.ts';
import { connectCredential } from '../core/connect-credential.ts';
import { grantPrefixFor } from '../core/grant-prefix.ts';
import type {
  AuditSink,
  Clock,
  Device,
  DeviceDirectory,
  Grant,
  NonceStore,
  PacketFormat,
  RemoteEndpoint,
} from '../core/interfaces.ts';
import { transportOf } from '../core/transport.ts';
import { type Counters, counterName } from './counters.ts';
import type { GrantOpener, GrantOpenStatus } from './grant-manager.ts';
import type { LiveCredential } from './plain-credentials.ts';
import { accessAllowed, grantSeconds, isKeyActive, withinClockWindow } from './policy.ts';
import type { RateLimiter } from './rate-limiter.ts';
import type { RejectReason } from './reject-reason.ts';
import { canonicalSource, rateLimitKey, sameAddress } from './source-address.ts';

export type { RejectReason } from './reject-reason.ts';

export interface ReceiverConfig {
  /** [BC1-6] |now - timestamp| must not exceed this, ms. @default 60000 (spa/limits.ts) */
  readonly clockWindowMs: number;
  /** Grant length when the packet asks for 0 seconds (still capped by the device's maxOpenSeconds). @default 30 */
  readonly defaultGrantSeconds: number;
}

export interface ReceiverDeps {
  readonly directory: DeviceDirectory;
  readonly nonces: NonceStore;
  readonly grants: GrantOpener;
  readonly audit: AuditSink;
  readonly clock: Clock;
  /** [BC1-2] Failures per (source, key id): peeked before authentication, spent by authentication failures. */
  readonly rateLimiter: RateLimiter;
  /** [BC1-9] Accepted knocks per device (key: device id). */
  readonly deviceRateLimiter: RateLimiter;
  readonly counters: Counters;
  readonly config: ReceiverConfig;
  /** Optional cap on 'packet.rejected' audit lines (key 'rejected'): a junk flood is counted, not logged line by line. */
  readonly rejectAuditLimiter?: RateLimiter;
  /**
   * The plain profile (plain-credential-keeper.ts): a BC1 knock of a plain device installs its one-time connect
   * credential before the grant opens. Undefined: plain devices get grants but no credential (they cannot log in).
   */
  readonly connectCredentials?: { knockAccepted(entry: LiveCredential): Promise<void> };
}

export interface Accepted {
  readonly format: PacketFormat;
  readonly deviceId: string;
  /** The observed source address (canonical form). */
  readonly source: string;
  readonly status: GrantOpenStatus;
  readonly grant: Grant;
  /** The grant length this packet earned, seconds. */
  readonly grantSeconds: number;
  readonly replayIdHash: string;
  /** BC1: the native key id the packet was sealed with (key rotation notes its first use). */
  readonly keyId?: number;
}

export type Outcome = Result<Accepted, RejectReason>;

/** What counting and auditing a rejection needs. */
export type AccountingDeps = Pick<ReceiverDeps, 'audit' | 'clock' | 'counters' | 'rejectAuditLimiter'>;

/**
 * What the screening half needs ([BC1-1]..[BC1-7]): no nonce record and no grant, only the start-time guard's
 * `notBefore`. A reader worker builds these from the owner's snapshot (reader-workers.ts).
 */
export type ScreeningDeps = AccountingDeps &
  Pick<ReceiverDeps, 'directory' | 'rateLimiter' | 'config'> & {
    readonly nonces: Pick<NonceStore, 'notBefore'>;
  };

/** What the deciding half needs ([BC1-8] [BC1-9]): the one place that records nonces and opens grants. */
export type DecidingDeps = AccountingDeps &
  Pick<ReceiverDeps, 'nonces' | 'grants' | 'deviceRateLimiter' | 'config' | 'connectCredentials'>;

/** The device fields the deciding half uses: no key material. */
export interface CandidateDevice {
  readonly id: string;
  readonly maxOpenSeconds: number;
  readonly grantPrefix?: Device['grantPrefix'];
}

/**
 * An authenticated, fresh, policy-allowed request ([BC1-1]..[BC1-7] passed), ready for the replay record and the
 * grant. Plain data (structured-clone safe) and free of keys: what a reader worker posts to the owner.
 */
export interface Candidate {
  readonly format: PacketFormat;
  readonly device: CandidateDevice;
  /** The observed source (canonical form). */
  readonly source: RemoteEndpoint;
  readonly timestampMs: number;
  readonly requestedSeconds: number;
  readonly access: readonly AccessEntry[];
  readonly replayId: string;
  /** BC1: the native key id that opened the packet. */
  readonly keyId?: number;
  /**
   * The plain profile: the knock's one-time connect credential (a secret for its window; never the key). Only the
   * owner's `connectCredentials` sees it; never in an outcome, audit event, counter or log.
   */
  readonly connectCredential?: string;
}

function withCredential(credential: string | undefined): { connectCredential?: string } {
  return credential === undefined ? {} : { connectCredential: credential };
}

/** What `authenticateScreened` decided: a candidate for the owner, or already rejected (counted and audited). */
export type Authenticated =
  | { readonly ok: true; readonly candidate: Candidate }
  | { readonly ok: false; readonly outcome: Outcome };

/** What every step returns: the value for the next step, or why the packet stops here. */
type Step<T> = Result<T, RejectReason>;

/** What the pipeline learned so far, for the rejection's audit record. */
interface Trace {
  format?: PacketFormat;
  deviceId?: string;
  detail?: string;
}

/** An authenticated, parsed request, common to both formats, ready for the clock, policy and replay steps. */
interface Request {
  readonly format: PacketFormat;
  readonly device: Device;
  readonly timestampMs: number;
  readonly requestedSeconds: number;
  /** Empty for fwknop messages that are not access requests (refused by the policy step). */
  readonly access: readonly AccessEntry[];
  readonly replayId: string;
  /** BC1: the native key id that opened the packet. */
  readonly keyId?: number;
  /** BC1: the address the packet claims to come from, if any. */
  readonly claimedSource?: IpAddress;
  /** BC1: what the plain profile's connect credential is derived from (connect-credential.ts). Never logged. */
  readonly sealedBy?: { readonly key: Uint8Array; readonly nonce: Uint8Array };
  /** fwknop: the fields the policy step checks. */
  readonly fwknop?: {
    readonly username: string;
    readonly messageType: number;
    readonly allowIp: string | undefined;
  };
}

const REPLAY_ID_HASH_HEX_LENGTH = 16;
const AUDIT_KEY_REJECTED = 'rejected';

/** SHA-256 of the replay id, hex, truncated to 64 bits: names a packet in logs without revealing it. */
export function replayIdHash(replayId: string): string {
  return createHash('sha256').update(replayId).digest('hex').slice(0, REPLAY_ID_HASH_HEX_LENGTH);
}

/** A datagram that passed `screenDatagram`: framed, within its failure limit, ready for `continueDatagram`. */
export interface ScreenedDatagram {
  readonly pass: true;
  readonly source: RemoteEndpoint;
  readonly frame: Frame;
  readonly trace: Trace;
  /** Its [BC1-2] failure bucket, spent if it fails authentication. */
  readonly limitKey: string;
}

/** What `screenDatagram` decided: go on, or already rejected (counted and audited). */
export type Screened = ScreenedDatagram | { readonly pass: false; readonly outcome: Outcome };

/**
 * The synchronous first steps [BC1-1] [BC1-2]: count, canonical source, frame, per-source rate limit. A datagram
 * failing them is rejected here (counted, audited, never answered) without allocating a promise, so a flood of
 * junk costs less than a knock. Never throws. `handleDatagram` = `screenDatagram` then `continueDatagram`.
 */
export function screenDatagram(bytes: Uint8Array, remote: RemoteEndpoint, deps: ScreeningDeps): Screened {
  const trace: Trace = {};
  let source = remote;
  try {
    deps.counters.increment(counterName.received);
    source = canonicalSource(remote);
    const frame = frameStep(bytes); // [BC1-1]
    if (!frame.ok) return { pass: false, outcome: rejected(frame.reason, source, trace, deps) };
    trace.format = frame.value.format;
    const limitKey = failureLimitKey(source, frame.value);
    const limited = rateLimitStep(limitKey, deps); // [BC1-2]
    if (!limited.ok) return { pass: false, outcome: rejected(limited.reason, source, trace, deps) };
    return { pass: true, source, frame: frame.value, trace, limitKey };
  } catch {
    return { pass: false, outcome: rejected('internal-error', source, trace, deps) };
  }
}

/** The rest of the pipeline for a screened datagram ([BC1-3] onwards). Never throws. */
export async function continueDatagram(
  bytes: Uint8Array,
  screened: ScreenedDatagram,
  deps: ReceiverDeps,
): Promise<Outcome> {
  const authenticated = await authenticateScreened(bytes, screened, deps);
  return authenticated.ok ? decideCandidate(authenticated.candidate, deps) : authenticated.outcome;
}

/**
 * [BC1-3]..[BC1-7] for a screened datagram: key lookup, AEAD / HMAC, parse, clock window, policy. A failure is
 * counted and audited here (and spends the [BC1-2] bucket when authentication failed). Never throws.
 */
export async function authenticateScreened(
  bytes: Uint8Array,
  screened: ScreenedDatagram,
  deps: ScreeningDeps,
): Promise<Authenticated> {
  const { source, trace } = screened;
  try {
    const candidate = await screenPipeline(bytes, source, screened.frame, deps, trace);
    if (candidate.ok) return { ok: true, candidate: candidate.value };
    if (AUTHENTICATION_FAILURES.has(candidate.reason)) deps.rateLimiter.take(screened.limitKey); // [BC1-2]
    return { ok: false, outcome: rejected(candidate.reason, source, trace, deps) };
  } catch {
    return { ok: false, outcome: rejected('internal-error', source, trace, deps) };
  }
}

/** [BC1-8] [BC1-9] for an authenticated candidate: replay record, per-device limit, grant. Never throws. */
export async function decideCandidate(candidate: Candidate, deps: DecidingDeps): Promise<Outcome> {
  const trace: Trace = { format: candidate.format, deviceId: candidate.device.id };
  try {
    const outcome = await decidePipeline(candidate, deps);
    return outcome.ok
      ? accepted(outcome.value, deps)
      : rejected(outcome.reason, candidate.source, trace, deps);
  } catch {
    return rejected('internal-error', candidate.source, trace, deps);
  }
}

export async function handleDatagram(
  bytes: Uint8Array,
  remote: RemoteEndpoint,
  deps: ReceiverDeps,
): Promise<Outcome> {
  const screened = screenDatagram(bytes, remote, deps);
  return screened.pass ? continueDatagram(bytes, screened, deps) : screened.outcome;
}

/** [BC1-3] .. [BC1-7], after the frame and rate-limit steps passed. */
async function screenPipeline(
  bytes: Uint8Array,
  source: RemoteEndpoint,
  frame: Frame,
  deps: ScreeningDeps,
  trace: Trace,
): Promise<Step<Candidate>> {
  const request =
    frame.format === 'bc1'
      ? await authenticateBc1(bytes, frame.header, deps, trace) // [BC1-3..5]
      : await authenticateFwknop(bytes, frame.frame, source, deps, trace); // [BC1-3..5]
  if (!request.ok) return request;
  const fresh = clockStep(request.value.timestampMs, deps); // [BC1-6]
  if (!fresh.ok) return fresh;
  const allowed = policyStep(request.value, source); // [BC1-7]
  if (!allowed.ok) return allowed;
  return ok(candidateOf(request.value, source));
}

/** The request as the owner sees it: the device's id and grant bounds, never its keys. */
function candidateOf(request: Request, source: RemoteEndpoint): Candidate {
  const { device } = request;
  return {
    format: request.format,
    device: {
      id: device.id,
      maxOpenSeconds: device.maxOpenSeconds,
      ...(device.grantPrefix === undefined ? {} : { grantPrefix: device.grantPrefix }),
    },
    source,
    timestampMs: request.timestampMs,
    requestedSeconds: request.requestedSeconds,
    access: request.access,
    replayId: request.replayId,
    ...(request.keyId === undefined ? {} : { keyId: request.keyId }),
    ...withCredential(credentialOf(request)),
  };
}

/** [BC1-8] .. [BC1-9]: the owner's part. */
async function decidePipeline(candidate: Candidate, deps: DecidingDeps): Promise<Step<Accepted>> {
  const recorded = await replayStep(candidate, deps); // [BC1-8]
  if (!recorded.ok) return recorded;
  // [BC1-9] accepted knocks per device, after the replay check (a replay costs the device nothing).
  if (!deps.deviceRateLimiter.take(candidate.device.id)) return reject('device-rate-limited');
  return grantStep(candidate, deps); // [BC1-9]
}

// ------------------------------------------------------------------------------------------------
// [BC1-1] Frame: length, then magic (BC1) or the fwknop text shape. No crypto; one copy (BC1 nonce, fwknop text).
// ------------------------------------------------------------------------------------------------

type Frame =
  | { readonly format: 'bc1'; readonly header: Bc1Header }
  | { readonly format: 'fwknop'; readonly frame: FwknopFrame };

/**
 * The receiver's [BC1-1] reason for each fwknop shape rule that failed: a GnuPG-sized wire is too long, a
 * non-base64 byte or the blob prefix is not an fwknop text (bad magic).
 */
const FWKNOP_FRAME_REJECT: Readonly<Record<FwknopFrameReason, RejectReason>> = Object.freeze({
  'too-short': 'too-short',
  'too-long': 'too-long',
  'gpg-not-supported': 'too-long',
  'bad-base64': 'bad-magic',
  'bad-prefix': 'bad-magic',
});

function frameStep(bytes: Uint8Array): Step<Frame> {
  const first = bytes[0];
  if (first === undefined) return reject('too-short');
  if (first === BC1_MAGIC) {
    const header = readBc1Header(bytes);
    return header.ok ? ok({ format: 'bc1', header: header.value }) : header;
  }
  if (!looksLikeFwknop(bytes)) return reject('bad-magic');
  // [FKO-1] [FKO-2] [FKO-3] length, base64 text, no 'U2FsdGVkX1' prefix: checked here once, never again.
  const frame = readFwknopFrame(bytes);
  return frame.ok ? ok({ format: 'fwknop', frame: frame.value }) : reject(FWKNOP_FRAME_REJECT[frame.reason]);
}

/**
 * [BC1-2] The failure bucket of a framed datagram: its source address (IPv6: its /64) and, for BC1, the key id it
 * names. Junk that does not carry a device's key id never touches that device's bucket.
 */
function failureLimitKey(source: RemoteEndpoint, frame: Frame): string {
  const prefix = rateLimitKey(source);
  return frame.format === 'bc1' ? `${prefix} bc1 ${frame.header.keyId}` : `${prefix} fwknop`;
}

/** The reasons that spend a [BC1-2] token: the packet did not authenticate (or did, with nothing usable). */
const AUTHENTICATION_FAILURES: ReadonlySet<RejectReason> = new Set<RejectReason>([
  'unknown-key',
  'device-disabled',
  'key-inactive',
  'auth-failed',
  'malformed',
]);

// [BC1-2] Peeked before any lookup or crypto; spent only when the packet then fails authentication.
function rateLimitStep(limitKey: string, deps: ScreeningDeps): Step<true> {
  return deps.rateLimiter.peek(limitKey) ? ok(true) : reject('rate-limited');
}

// ------------------------------------------------------------------------------------------------
// BC1: [BC1-3] key lookup by key id → [BC1-4] AEAD open → [BC1-5] strict parse.
// ------------------------------------------------------------------------------------------------

async function authenticateBc1(
  bytes: Uint8Array,
  header: Bc1Header,
  deps: ScreeningDeps,
  trace: Trace,
): Promise<Step<Request>> {
  // [BC1-3] key id known and the key active: one lookup, at most one AEAD open, never a trial over keys.
  let found: Awaited<ReturnType<DeviceDirectory['byKeyId']>>;
  try {
    found = await deps.directory.byKeyId(header.keyId);
  } catch {
    return reject('directory-unavailable'); // fail closed
  }
  if (found === undefined) return reject('unknown-key');
  const { device, key } = found;
  trace.deviceId = device.id;
  if (!device.enabled) return reject('device-disabled');
  if (!isKeyActive(key, deps.clock.now())) return reject('key-inactive');
  // [BC1-4] AEAD opens before anything is parsed; [BC1-5] then the payload is parsed strictly.
  const packet = decodeBc1(bytes, key.key);
  if (!packet.ok) {
    if (packet.reason === 'auth-failed') return reject('auth-failed');
    trace.detail = packet.reason;
    return reject('malformed');
  }
  const { payload } = packet.value;
  return ok({
    format: 'bc1',
    device,
    timestampMs: payload.timestampMs,
    requestedSeconds: payload.durationSeconds,
    access: payload.access,
    replayId: bc1ReplayId(packet.value.keyId, packet.value.nonce),
    keyId: packet.value.keyId,
    sealedBy: { key: key.key, nonce: packet.value.nonce },
    ...(payload.claimedSource === undefined ? {} : { claimedSource: payload.claimedSource }),
  });
}

// ------------------------------------------------------------------------------------------------
// fwknop: [BC1-3] candidates → [BC1-4] HMAC trial per candidate → [BC1-5] decrypt + parse.
// ------------------------------------------------------------------------------------------------

/** fwknop message types the receiver grants: 1 access, 3 access with client timeout. Command and NAT are refused. */
const FWKNOP_ACCESS = 1;
const FWKNOP_ACCESS_WITH_TIMEOUT = 3;
const FWKNOP_ANY_SOURCE = '0.0.0.0';

async function authenticateFwknop(
  wire: Uint8Array,
  frame: FwknopFrame,
  source: RemoteEndpoint,
  deps: ScreeningDeps,
  trace: Trace,
): Promise<Step<Request>> {
  // [BC1-3] fwknop carries no key id: the directory names a few candidates and each one's HMAC is tried.
  let candidates: readonly Device[];
  try {
    candidates = await deps.directory.fwknopCandidates(source);
  } catch {
    return reject('directory-unavailable'); // fail closed
  }
  const withKeys = candidates.filter((device) => device.fwknop !== undefined);
  if (withKeys.length === 0) return reject('unknown-key');
  // [BC1-4] [FKO-4] [FKO-15] one HMAC per candidate (constant time), over the frame read once; only the first
  // candidate whose HMAC verifies has the packet decrypted and parsed [BC1-5], in the same call.
  for (const device of withKeys) {
    const settings = device.fwknop!;
    const decoded = decodeFwknopFrame(frame, settings);
    if (!decoded.ok && decoded.reason === 'auth-failed') continue;
    trace.deviceId = device.id;
    if (!device.enabled) return reject('device-disabled');
    if (!decoded.ok) {
      trace.detail = decoded.reason;
      return reject('malformed');
    }
    return ok(fwknopRequest(device, decoded.value, wire));
  }
  return reject('auth-failed');
}

function fwknopRequest(device: Device, message: FwknopMessage, wire: Uint8Array): Request {
  return {
    format: 'fwknop',
    device,
    timestampMs: message.timestamp * 1000, // fwknop timestamps are Unix seconds
    requestedSeconds:
      message.messageType === FWKNOP_ACCESS_WITH_TIMEOUT ? Math.max(0, message.clientTimeout ?? 0) : 0,
    access: message.access?.entries ?? [],
    replayId: fwknopReplayId(wire),
    fwknop: {
      username: message.username,
      messageType: message.messageType,
      allowIp: message.access?.allowIp,
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Common tail: [BC1-6] clock → [BC1-7] policy → [BC1-8] replay → [BC1-9] grant.
// ------------------------------------------------------------------------------------------------

function clockStep(timestampMs: number, deps: ScreeningDeps): Step<true> {
  if (!withinClockWindow(timestampMs, deps.clock.now(), deps.config.clockWindowMs)) return reject('stale');
  // The nonce store cannot vouch for packets stamped before its memory began (e.g. before a restart).
  const notBefore = deps.nonces.notBefore;
  if (notBefore !== undefined && timestampMs < notBefore) return reject('before-start');
  return ok(true);
}

/**
 * [BC1-7] fwknop: the username is the matched device's, only access requests (types 1, 3) are granted and the
 * allow IP is 0.0.0.0 or the observed source. BC1: a claimed source, if present, equals the observed one.
 * Both: every requested port is allowed for the device.
 */
function policyStep(request: Request, source: RemoteEndpoint): Step<true> {
  const fwknop = request.fwknop;
  if (fwknop !== undefined) {
    if (fwknop.username !== request.device.fwknop?.username) return reject('username-mismatch');
    if (fwknop.messageType !== FWKNOP_ACCESS && fwknop.messageType !== FWKNOP_ACCESS_WITH_TIMEOUT) {
      return reject('unsupported-message');
    }
    if (fwknop.allowIp === undefined || request.access.length === 0) return reject('malformed');
    if (
      fwknop.allowIp !== FWKNOP_ANY_SOURCE &&
      !sameAddress({ family: 4, address: fwknop.allowIp }, source)
    ) {
      return reject('source-mismatch');
    }
  }
  if (request.claimedSource !== undefined && !sameAddress(request.claimedSource, source)) {
    return reject('source-mismatch');
  }
  return accessAllowed(request.access, request.device.allowedAccess) ? ok(true) : reject('port-not-allowed');
}

async function replayStep(candidate: Candidate, deps: DecidingDeps): Promise<Step<true>> {
  let result: Awaited<ReturnType<NonceStore['record']>>;
  try {
    // Remembered until the packet could no longer pass the clock step anyway; owned by the device (its share).
    result = await deps.nonces.record(
      candidate.replayId,
      candidate.timestampMs + deps.config.clockWindowMs,
      candidate.device.id,
    );
  } catch {
    return reject('nonce-store-unavailable'); // fail closed
  }
  if (result === 'share-full') return reject('nonce-share-full');
  return result === 'fresh' ? ok(true) : reject('replay');
}

async function grantStep(candidate: Candidate, deps: DecidingDeps): Promise<Step<Accepted>> {
  const { device, source } = candidate;
  const seconds = grantSeconds(
    candidate.requestedSeconds,
    device.maxOpenSeconds,
    deps.config.defaultGrantSeconds,
  );
  await installConnectCredential(candidate, seconds, deps);
  const policy = device.grantPrefix;
  const opened = await deps.grants.open(
    device.id,
    // Off by default: a prefix grant only for a device whose entry sets grantPrefix (docs/scaling.md).
    policy === undefined
      ? { address: source.address, family: source.family }
      : grantPrefixFor(source.address, policy),
    candidate.access,
    seconds,
  );
  if (!opened.ok) return reject('grant-failed');
  return ok({
    format: candidate.format,
    deviceId: device.id,
    source: source.address,
    status: opened.value.status,
    grant: opened.value.grant,
    grantSeconds: seconds,
    replayIdHash: replayIdHash(candidate.replayId),
    ...(candidate.keyId === undefined ? {} : { keyId: candidate.keyId }),
  });
}

/**
 * The plain profile: a BC1 knock of a plain device makes its one-time connect credential, bound to the observed
 * source and this knock's window, live before the grant lets it reach the broker. The credential goes to the
 * keeper only: never into the outcome, the audit or a counter.
 */
async function installConnectCredential(
  candidate: Candidate,
  seconds: number,
  deps: DecidingDeps,
): Promise<void> {
  const { device, connectCredential: credential } = candidate;
  if (deps.connectCredentials === undefined || credential === undefined) return;
  await deps.connectCredentials.knockAccepted({
    deviceId: device.id,
    credential,
    address: candidate.source.address,
    expiresAt: deps.clock.now() + seconds * 1000,
  });
}

/** A plain device's BC1 knock: its one-time connect credential (derived where the key is: the authenticating half). */
function credentialOf(request: Request): string | undefined {
  const { device, keyId, sealedBy } = request;
  if (transportOf(device) !== 'plain') return undefined;
  if (keyId === undefined || sealedBy === undefined) return undefined; // fwknop: no credential (docs/threat-model.md)
  return connectCredential(sealedBy.key, { deviceId: device.id, keyId, nonce: sealedBy.nonce });
}

// ------------------------------------------------------------------------------------------------
// Accounting: counters and audit. Neither may throw out of handleDatagram.
// ------------------------------------------------------------------------------------------------

function accepted(value: Accepted, deps: AccountingDeps): Outcome {
  deps.counters.increment(counterName.accepted);
  deps.counters.increment(counterName.acceptedFormat(value.format));
  safeAudit(deps.audit, {
    type: 'packet.accepted',
    time: deps.clock.now(),
    deviceId: value.deviceId,
    source: value.source,
    format: value.format,
    access: value.grant.access,
    grantSeconds: value.grantSeconds,
    replayIdHash: value.replayIdHash,
  });
  return ok(value);
}

function rejected(reason: RejectReason, source: RemoteEndpoint, trace: Trace, deps: AccountingDeps): Outcome {
  try {
    deps.counters.increment(counterName.rejected);
    deps.counters.increment(counterName.rejectedReason(reason));
    if (deps.rejectAuditLimiter !== undefined && !deps.rejectAuditLimiter.take(AUDIT_KEY_REJECTED)) {
      deps.counters.increment(counterName.auditSuppressed);
      return reject(reason);
    }
    safeAudit(deps.audit, {
      type: 'packet.rejected',
      time: deps.clock.now(),
      source: source.address,
      reason,
      ...(trace.format === undefined ? {} : { format: trace.format }),
      ...(trace.deviceId === undefined ? {} : { deviceId: trace.deviceId }),
      ...(trace.detail === undefined ? {} : { detail: trace.detail }),
    });
  } catch {
    // Counters or clock failing: the packet is dropped all the same.
  }
  return reject(reason);
}

function safeAudit(audit: AuditSink, event: Parameters<AuditSink['write']>[0]): void {
  try {
    audit.write(event);
  } catch {
    // The audit sink failing must not turn into an answer or a crash.
  }
}
