/**
 * The control socket's revoke by address: one address in any spelling (functions/core/ip-address.ts), so
 * `blackcloud grants revoke 0:0:0:0:0:0:0:1` closes the open `::1` grant.
 */
import { describe, expect, it } from 'vitest';
import type { Grant } from '../../../functions/core/interfaces.ts';
import { canonicalAddress } from '../../../functions/core/ip-address.ts';
import { type ControlDeps, handleControlRequest } from '../../../functions/local/control-server.ts';

function grant(address: string, deviceId: string): Grant {
  return {
    deviceId,
    address,
    family: address.includes(':') ? 6 : 4,
    access: [{ protocol: 'tcp', port: 8883 }],
    openedAt: 1,
    expiresAt: 2,
  };
}

function depsWith(open: Grant[]): ControlDeps {
  return {
    grants: {
      active: () => open,
      async revokeWhere(match) {
        const closed = open.filter(match);
        open.splice(0, open.length, ...open.filter((g) => !match(g)));
        return closed;
      },
    },
    reloadDevices: async () => undefined,
    isEnabled: () => true,
    brokerEmbedded: true,
    cutOffs: { cutOff: async () => undefined, take: async () => ({ revoked: [], disconnected: 0 }) },
  };
}

describe('revoke by address', () => {
  it.each([
    ['0:0:0:0:0:0:0:1', '::1'],
    ['0000:0000:0000:0000:0000:0000:0000:0001', '::1'],
    ['::FFFF:127.0.0.1', '127.0.0.1'],
    ['2001:DB8:0:0:0:0:0:7', '2001:db8::7'],
  ])('%s revokes the open %s grant, and only it', async (asked, open) => {
    const grants = [grant(open, 'sensor-1'), grant('192.0.2.9', 'sensor-2')];
    const response = await handleControlRequest({ op: 'revoke', address: asked }, depsWith(grants));
    expect(response).toEqual({ ok: true, revoked: [grant(open, 'sensor-1')] });
    expect(grants.map((g) => g.deviceId)).toEqual(['sensor-2']);
  });
});

describe('canonicalAddress', () => {
  it('one text per address; undefined for what is not one', () => {
    expect(canonicalAddress('0:0:0:0:0:0:0:1')).toBe('::1');
    expect(canonicalAddress('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(canonicalAddress('10.0.0.1')).toBe('10.0.0.1');
    expect(canonicalAddress('fe80::1%eth0')).toBeUndefined();
    expect(canonicalAddress('010.0.0.1')).toBeUndefined();
    expect(canonicalAddress('nosuch')).toBeUndefined();
  });
});
