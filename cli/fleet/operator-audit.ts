/**
 * Operator actions as audit records (`device.added`, `device.disabled`, `device.enabled`, `device.removed`),
 * written next to the receiver's events so `blackcloud audit` answers "who did what, when" in one trail.
 * Pure: builds the record; the fleets write it (local: a line appended to audit.jsonl; AWS: a log event).
 * Records carry ids and counts, never key material.
 */
import type { AuditRecord } from './fleet.ts';

export type OperatorAction = 'device.added' | 'device.disabled' | 'device.enabled' | 'device.removed';

export interface OperatorAuditInput {
  readonly type: OperatorAction;
  readonly time: number;
  readonly deviceId: string;
  /** Who ran the command (`user@host`). */
  readonly operator: string;
  readonly revokedGrants?: number;
  readonly disconnected?: number;
}

export function operatorAuditRecord(input: OperatorAuditInput): AuditRecord {
  return Object.freeze({
    type: input.type,
    time: input.time,
    deviceId: input.deviceId,
    operator: input.operator,
    ...(input.revokedGrants === undefined ? {} : { revokedGrants: input.revokedGrants }),
    ...(input.disconnected === undefined ? {} : { disconnected: input.disconnected }),
  });
}
