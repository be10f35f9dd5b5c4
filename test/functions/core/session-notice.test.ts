/**
 * The operator's session notice (functions/core/session-notice.ts): what the broker encodes parses back; a key
 * offer, junk, an unknown reason, extra fields or an oversized payload is not a notice.
 */
import { describe, expect, it } from 'vitest';
import {
  encodeSessionNotice,
  MAX_SESSION_NOTICE_BYTES,
  parseSessionNotice,
  sessionNoticeTopic,
} from '../../../functions/core/session-notice.ts';

const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'utf8'));

describe('session notice', () => {
  it.each(['disabled', 'removed'] as const)('round-trips reason %s on the device key topic', (reason) => {
    expect(Buffer.from(encodeSessionNotice(reason)).toString()).toBe(
      `{"v":1,"session":"closed","reason":"${reason}"}`,
    );
    expect(parseSessionNotice(encodeSessionNotice(reason))).toEqual({ ok: true, value: { reason } });
    expect(sessionNoticeTopic('meter-7')).toBe('blackcloud/keys/meter-7');
  });

  it.each([
    ['a key offer', `{"v":1,"keyId":2,"key":"${Buffer.alloc(32).toString('base64')}","oldKeyNotAfter":"x"}`],
    ['an unknown reason', '{"v":1,"session":"closed","reason":"expired"}'],
    ['another version', '{"v":2,"session":"closed","reason":"disabled"}'],
    ['an extra field', '{"v":1,"session":"closed","reason":"disabled","until":1}'],
    ['not JSON', '{"v":1,'],
    ['JSON null', 'null'],
    ['too long', `{"v":1,"session":"closed","reason":"disabled"}${' '.repeat(MAX_SESSION_NOTICE_BYTES)}`],
  ])('%s is not a notice', (_what, text) => {
    expect(parseSessionNotice(bytes(text))).toEqual({ ok: false, reason: 'not-a-notice' });
  });
});
