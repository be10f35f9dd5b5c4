/**
 * The receiver's health port, for a load balancer's TCP health check (receivers behind a UDP Network Load
 * Balancer). Contract: while it is open, a TCP connection to it is accepted and closed at once, with nothing
 * written: "this receiver is up and its UDP socket is bound". It is opened after the SPA socket is bound and closed
 * first at shutdown, so the balancer stops routing knocks here before the receiver stops reading them. It never
 * reads from the connection. The stack admits this port from the VPC's own range only; it is a separate TCP port,
 * so the SPA port itself still never answers anything.
 */
import { createServer, type Server } from 'node:net';

export interface HealthListener {
  /** The bound address (port 0 in tests is read back here). */
  readonly address: { readonly address: string; readonly port: number };
  /** Stop accepting health checks (connections in progress are dropped). Idempotent. */
  close(): Promise<void>;
}

export async function startHealthListener(options: {
  readonly host: string;
  readonly port: number;
}): Promise<HealthListener> {
  const server: Server = createServer({ allowHalfOpen: false }, (socket) => {
    socket.on('error', () => undefined);
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: options.host, port: options.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address();
  if (bound === null || typeof bound === 'string') throw new Error('health listener has no TCP address');
  let closing: Promise<void> | undefined;
  return {
    address: { address: bound.address, port: bound.port },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
      });
      return closing;
    },
  };
}
