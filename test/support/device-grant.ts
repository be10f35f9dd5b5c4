/**
 * The grant of fleet device i (the address bench/fleet/fleet-model.ts gives it) on the broker port tcp/8883, opened
 * at `now` for 60 s: the grant the firewall tests on the EC2 model open, extend and revoke.
 */
import { deviceAddress } from '../../bench/fleet/fleet-model.ts';
import type { Grant } from '../../functions/core/interfaces.ts';

export const deviceGrant = (i: number, now: number): Grant => ({
  deviceId: `dev-${i}`,
  address: deviceAddress(i),
  family: 4,
  access: [{ protocol: 'tcp', port: 8883 }],
  openedAt: now,
  expiresAt: now + 60_000,
});
