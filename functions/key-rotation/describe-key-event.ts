/**
 * One human line (without the time) per key-rotation audit event, for consoles (`blackcloud up`). Pure; key ids
 * only, never key material.
 */
import type { KeyAuditEvent } from '../core/interfaces.ts';

export function describeKeyEvent(event: KeyAuditEvent): string {
  switch (event.type) {
    case 'key.offered':
      return `new SPA key ${event.keyId} (generation ${event.generation}) offered to ${event.deviceId}`;
    case 'key.resent':
      return `pending SPA key ${event.keyId} sent to ${event.deviceId} (again until acknowledged)`;
    case 'key.confirmed':
      return `SPA key ${event.keyId} of ${event.deviceId} confirmed (${event.by === 'ack' ? 'acknowledged' : 'first used'}); older keys end ${new Date(event.oldKeysNotAfter).toISOString()}`;
    case 'key.retired':
      return `SPA key(s) ${event.keyIds.join(', ')} of ${event.deviceId} retired (${event.reason})`;
    case 'key.ack-rejected':
      return `key acknowledgement from ${event.deviceId} refused: ${event.reason}${event.keyId === undefined ? '' : ` (key ${event.keyId})`}`;
    case 'key.rotation-failed':
      return `key rotation of ${event.deviceId} failed: ${event.error}`;
  }
}
