/**
 * Several firewalls as one (`blackcloud up` with the plain profile's listener: one gate per public port). Each
 * firewall decides for itself which grants concern it (a gate admits only grants naming its own port).
 *
 * Contract: `allow` and `revoke` go to every firewall, concurrently, and reject when any of them did (after all
 * were tried); `close` closes every one, even when an earlier one fails, and rejects with the first failure.
 */
import type { Firewall, Grant } from '../core/interfaces.ts';

export type ClosableFirewall = Firewall & { close(): Promise<void> };

export function fanOutFirewall(firewalls: readonly ClosableFirewall[]): ClosableFirewall {
  const all = async (call: (firewall: ClosableFirewall) => Promise<void>): Promise<void> => {
    const results = await Promise.allSettled(firewalls.map(call));
    const failed = results.find((result) => result.status === 'rejected');
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
  };
  return Object.freeze({
    allow: (grants: readonly Grant[]) => all((firewall) => firewall.allow(grants)),
    revoke: (grants: readonly Grant[]) => all((firewall) => firewall.revoke(grants)),
    close: () => all((firewall) => firewall.close()),
  });
}
