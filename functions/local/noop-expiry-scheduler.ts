/**
 * ExpiryScheduler for the local run: does nothing. Locally the grant manager's own timer revokes grants, and the
 * local firewalls need no durable backstop (the userspace gate forgets grants with the process; nftables set
 * elements carry their own timeout).
 */
import type { ExpiryScheduler, Grant } from '../core/interfaces.ts';

export class NoopExpiryScheduler implements ExpiryScheduler {
  async schedule(_grant: Grant): Promise<void> {}
}

export const noopExpiryScheduler: ExpiryScheduler = Object.freeze(new NoopExpiryScheduler());
