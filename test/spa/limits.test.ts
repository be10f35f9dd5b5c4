import { describe, expect, it } from 'vitest';
import {
  BC1_HEADER_LENGTH,
  BC1_MAX_PACKET_LENGTH,
  BC1_MIN_PACKET_LENGTH,
  BC1_OFFSET_NONCE,
} from '../../spa/limits.ts';

describe('BC1 limits', () => {
  it('matches docs/protocol.md [BC1-1]: 48 bytes for one port, 85 at most', () => {
    expect(BC1_MIN_PACKET_LENGTH).toBe(48);
    expect(BC1_MAX_PACKET_LENGTH).toBe(17 + 12 + 24 + 16 + 16);
    expect(BC1_OFFSET_NONCE + 12).toBe(BC1_HEADER_LENGTH);
  });
});
