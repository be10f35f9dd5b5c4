/**
 * The fleet, backend-neutral: what the operator commands (`blackcloud devices|grants|audit`) need, implemented
 * once for the local data directory (local-fleet.ts) and once for a deployed stack on AWS (aws-fleet.ts), so each
 * command is thin: parse flags, call one method, print.
 *
 * Contract every implementation keeps:
 * - `enrol` is all or nothing: on failure it removes what it created for that device, then rethrows; a device
 *   left `partial` by a killed run is cleaned up and created afresh by the next `enrol`.
 * - `state` says whether a device is fully there ('present'), not there ('absent') or left half-created
 *   ('partial'); the bulk enrolment skips 'present' devices, which makes a re-run resume.
 * - `setEnabled(id, false)` refuses the device's new knocks, revokes its open grants and (where the backend can
 *   reach the broker) closes its broker sessions; it is audited. Unknown ids throw `FleetError`.
 * - Key material never appears in results other than `EnrolledDevice.fwknop` (what the operator asked to see).
 * - `enrol` refuses a plain device with fwknop knocks (`plainKnockProblem`) before creating anything.
 */
import type { DeviceTransport } from '../../functions/core/transport.ts';
import type { AccessEntry, FwknopHashType } from '../../spa/types.ts';

export type DeviceFormat = 'native' | 'fwknop';
export type DeviceState = 'absent' | 'present' | 'partial';

/** Misuse, or a device / grant that does not exist. Messages name the value and the fix. */
export class FleetError extends Error {
  override readonly name = 'FleetError';
}

/**
 * Why a device of this transport cannot knock in this format, or undefined when it can: a plain device knocks BC1
 * only, since its one-time connect credential derives from the BC1 knock's key id and nonce
 * (functions/core/connect-credential.ts), which fwknop knocks do not carry. The one statement of that rule; callers
 * add the fix in their own terms (a flag, a device id).
 */
export function plainKnockProblem(
  transport: DeviceTransport | undefined,
  format: DeviceFormat,
): string | undefined {
  return transport === 'plain' && format !== 'native'
    ? 'a plain device knocks with BC1 only (its one-time connect credential derives from the BC1 knock; fwknop ' +
        'knocks carry no key id and nonce to derive it from)'
    : undefined;
}

/** `enrol`'s check of a request, shared by every fleet: throws FleetError naming the device and the fix. */
export function checkEnrolRequest(request: EnrolRequest): void {
  const problem = plainKnockProblem(request.transport, request.format);
  if (problem !== undefined) {
    throw new FleetError(
      `${problem}; fix: drop --format fwknop for ${request.deviceId}, or use --transport tls`,
    );
  }
}

export interface EnrolRequest {
  readonly deviceId: string;
  readonly format: DeviceFormat;
  /** @default the broker port of the black cloud */
  readonly access?: readonly AccessEntry[];
  readonly maxOpenSeconds?: number;
  /**
   * How it reaches the broker (functions/core/transport.ts): `plain` for a device that cannot do TLS (no client
   * certificate; it logs in with each knock's one-time credential on the broker's plain listener). @default 'tls'
   */
  readonly transport?: DeviceTransport;
}

export interface EnrolledDevice {
  readonly deviceId: string;
  readonly format: DeviceFormat;
  /** The device bundle: a directory with device.json, client.crt, client.key, ca.crt (and fwknoprc). */
  readonly bundleDir: string;
  readonly deviceFile: string;
  readonly keyId: number;
  readonly access: readonly AccessEntry[];
  /** Set for a plain device (no client.crt/client.key in its bundle); undefined = tls. */
  readonly transport?: DeviceTransport;
  readonly fwknop?: {
    readonly username: string;
    readonly keyBase64: string;
    readonly hmacKeyBase64: string;
    readonly hmacType: FwknopHashType;
    readonly commandLine: string;
    readonly stanza: string;
    readonly rcFile: string;
  };
}

export interface DeviceSummary {
  readonly id: string;
  readonly enabled: boolean;
  readonly allowedAccess: readonly string[];
  readonly formats: readonly DeviceFormat[];
  readonly maxOpenSeconds: number;
  readonly keyIds: readonly number[];
  /** Set for a plain device; undefined = tls. */
  readonly transport?: DeviceTransport;
  /** Where its bundle is, when this machine has it. */
  readonly bundleDir?: string;
}

export interface FleetGrant {
  readonly deviceId: string;
  readonly address: string;
  readonly access: readonly string[];
  readonly openedAt: number;
  readonly expiresAt: number;
}

export interface CutOffResult {
  /** False when the device already was in the asked state. */
  readonly changed: boolean;
  readonly revoked: readonly FleetGrant[];
  /** Broker sessions closed; undefined when this backend cannot reach the broker. */
  readonly disconnected: number | undefined;
  /** What the operator should know (e.g. "up is not running: nothing was open"). */
  readonly notes: readonly string[];
}

export type GrantSelector = { readonly address: string } | { readonly deviceId: string };

/** One audit line: a receiver event (packet.*, grant.*) or an operator event (device.*). Times in epoch ms. */
export type AuditRecord = Readonly<Record<string, unknown>> & {
  readonly type: string;
  readonly time: number;
};

export interface AuditQuery {
  /** Only records at or after this instant (epoch ms). */
  readonly since?: number;
  readonly deviceId?: string;
  /** Keep reading new records until `signal` aborts. */
  readonly follow?: boolean;
  readonly signal?: AbortSignal;
}

export interface Fleet {
  readonly backend: 'local' | 'aws';
  /** Where this fleet lives, for messages ("data directory .blackcloud", "stack Blackcloud in eu-west-1"). */
  readonly description: string;
  state(deviceId: string): Promise<DeviceState>;
  enrol(request: EnrolRequest): Promise<EnrolledDevice>;
  list(): Promise<DeviceSummary[]>;
  show(deviceId: string): Promise<DeviceSummary | undefined>;
  setEnabled(deviceId: string, enabled: boolean): Promise<CutOffResult>;
  /** Deletes keys and bundle, revokes grants and sessions, removes the device (and its certificate's use). */
  remove(deviceId: string): Promise<CutOffResult>;
  grants(): Promise<FleetGrant[]>;
  revokeGrants(selector: GrantSelector): Promise<FleetGrant[]>;
  audit(query: AuditQuery): AsyncIterable<AuditRecord>;
}
