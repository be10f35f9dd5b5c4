/**
 * The operator's "your session is over" notice: the one thing a broker says to a device before it closes the
 * device's session because the operator disabled or removed it (docs/device-sdk.md, "When retrying cannot help").
 * MQTT 3.1.1 has no server DISCONNECT (MQTT 5 has one, with reason 0x98 "administrative action"), and a closed
 * socket looks exactly like a broker restart, so without this notice a device cannot tell the two apart.
 *
 * Wire form: one QoS 0 PUBLISH on the device's own key topic `blackcloud/keys/<id>` (functions/core/topics.ts),
 * which only the broker and the controller may publish to (topic-policy.ts, the Mosquitto ACL), so no device can
 * forge it for another; payload (JSON, never retained):
 *   { "v": 1, "session": "closed", "reason": "disabled" | "removed" }
 *
 * Contract: `parseSessionNotice` takes untrusted bytes and never throws; anything but exactly this shape (a key
 * offer, junk, an unknown reason, over `MAX_SESSION_NOTICE_BYTES`) is `not-a-notice`. Pure.
 */
import { z } from 'zod';
import { ok, type Result, reject } from '../../spa/result.ts';
import { keyTopic } from './topics.ts';

export const SESSION_NOTICE_VERSION = 1;
export const MAX_SESSION_NOTICE_BYTES = 256;

export type SessionNoticeReason = 'disabled' | 'removed';

export interface SessionNotice {
  readonly reason: SessionNoticeReason;
}

const noticeSchema = z.strictObject({
  v: z.literal(SESSION_NOTICE_VERSION),
  session: z.literal('closed'),
  reason: z.enum(['disabled', 'removed']),
});

/** Where the notice travels: the device's own key topic (readable by that device only, writable by no device). */
export function sessionNoticeTopic(deviceId: string): string {
  return keyTopic(deviceId);
}

export function encodeSessionNotice(reason: SessionNoticeReason): Buffer {
  return Buffer.from(JSON.stringify({ v: SESSION_NOTICE_VERSION, session: 'closed', reason }), 'utf8');
}

export function parseSessionNotice(payload: Uint8Array): Result<SessionNotice, 'not-a-notice'> {
  if (payload.length > MAX_SESSION_NOTICE_BYTES) return reject('not-a-notice');
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch {
    return reject('not-a-notice');
  }
  const parsed = noticeSchema.safeParse(json);
  return parsed.success ? ok({ reason: parsed.data.reason }) : reject('not-a-notice');
}
