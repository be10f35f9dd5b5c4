/**
 * The control socket of a running `blackcloud up` (`<data-dir>/control.sock`, mode 0600 inside the 0700 data
 * directory): how a separate `blackcloud` process (the fleet commands) learns what is open and cuts devices off.
 * Local grants live in the `up` process (the gate, or the nftables table it owns), so only it can list or close
 * them. Nothing here listens on the network.
 *
 * Protocol: the client sends ONE JSON line, the server answers ONE JSON line and closes the connection.
 *   {"op":"grants"}                          → {"ok":true,"grants":[Grant, ...]}
 *   {"op":"revoke","address":"10.0.0.7"}     → {"ok":true,"revoked":[Grant, ...]}   (or "deviceId":"sensor-1")
 *   {"op":"cut-off","deviceIds":["s-1"]}     → reloads the devices file first; each listed device that is not an
 *                                              enabled device any more loses its grants and its broker sessions
 *                                              → {"ok":true,"revoked":[...],"disconnected":N} ("disconnected"
 *                                              absent when `up` fronts an external broker; "brokerCutOff":
 *                                              "dynsec" when that broker's dynamic security took the change)
 * A bad request gets {"ok":false,"error":"<what was wrong and the fix>"}. `handleControlRequest` never throws and
 * the server never crashes `up` (a broken client connection is dropped; an idle one after 10 s; `close()` drops
 * every connection, so a stuck client cannot hold up the shutdown).
 */
import { chmod, rm, stat } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Grant } from '../core/interfaces.ts';
import { canonicalAddress } from '../core/ip-address.ts';

export const CONTROL_SOCKET_NAME = 'control.sock';
/** Longest request line accepted (bytes); a longer one is answered with an error. */
export const MAX_CONTROL_REQUEST_BYTES = 64 * 1024;
/** A connection idle this long (no complete request) is closed. */
const IDLE_TIMEOUT_MS = 10_000;
/** Unix socket paths are limited to 107 bytes on Linux. */
const MAX_SOCKET_PATH = 107;

export function controlSocketPath(dataDirRoot: string): string {
  return join(dataDirRoot, CONTROL_SOCKET_NAME);
}

/** What the handler needs from the running local cloud. */
export interface ControlDeps {
  readonly grants: {
    active(): readonly Grant[];
    revokeWhere(match: (grant: Grant) => boolean): Promise<Grant[]>;
  };
  /** Re-reads the devices file now (keeps the previous devices when it is invalid). */
  reloadDevices(): Promise<void>;
  /** True when the id is a device of the directory and enabled. */
  isEnabled(deviceId: string): boolean;
  /** False when `up` fronts an external broker: its sessions cannot be closed from here. */
  readonly brokerEmbedded: boolean;
  /** An external broker's control plane brought in step now (broker-dynsec.ts); false when there is none. */
  brokerControl?(): Promise<boolean>;
  /** Cuts devices off (cut-off.ts) and reports everything done to them since the last report. */
  readonly cutOffs: {
    cutOff(ids: Iterable<string>): Promise<void>;
    take(ids: Iterable<string>): Promise<{ revoked: readonly Grant[]; disconnected: number }>;
  };
}

export type ControlResponse =
  | { readonly ok: true; readonly grants: readonly Grant[] }
  | {
      readonly ok: true;
      readonly revoked: readonly Grant[];
      readonly disconnected?: number;
      readonly brokerCutOff?: 'dynsec';
    }
  | { readonly ok: false; readonly error: string };

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}

export async function handleControlRequest(request: unknown, deps: ControlDeps): Promise<ControlResponse> {
  try {
    const r = (typeof request === 'object' && request !== null ? request : {}) as Record<string, unknown>;
    switch (r.op) {
      case 'grants':
        return { ok: true, grants: [...deps.grants.active()] };
      case 'revoke': {
        if (typeof r.address === 'string' && r.address !== '') {
          // One address in any spelling (`0:0:0:0:0:0:0:1` is `::1`): both sides compared canonical.
          const address = canonicalAddress(r.address) ?? r.address;
          return {
            ok: true,
            revoked: await deps.grants.revokeWhere(
              (grant) => (canonicalAddress(grant.address) ?? grant.address) === address,
            ),
          };
        }
        if (typeof r.deviceId === 'string' && r.deviceId !== '') {
          const deviceId = r.deviceId;
          return { ok: true, revoked: await deps.grants.revokeWhere((grant) => grant.deviceId === deviceId) };
        }
        return { ok: false, error: 'revoke needs "address" or "deviceId" (a non-empty string)' };
      }
      case 'cut-off': {
        if (!isStringArray(r.deviceIds)) {
          return { ok: false, error: 'cut-off needs "deviceIds": a list of device ids' };
        }
        await deps.reloadDevices();
        const ids = r.deviceIds.filter((id) => !deps.isEnabled(id));
        const [, dynsec] = await Promise.all([
          deps.cutOffs.cutOff(ids),
          deps.brokerControl?.().catch(() => false) ?? false,
        ]);
        const { revoked, disconnected } = await deps.cutOffs.take(ids);
        return {
          ok: true,
          revoked,
          ...(deps.brokerEmbedded ? { disconnected } : {}),
          ...(dynsec ? { brokerCutOff: 'dynsec' as const } : {}),
        };
      }
      default:
        return {
          ok: false,
          error: `unknown op ${JSON.stringify(r.op)}: expected "grants", "revoke" or "cut-off"`,
        };
    }
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}

export interface ControlServer {
  readonly path: string;
  close(): Promise<void>;
}

/**
 * Listens on `path` (a stale socket file from a crashed run is replaced: the caller owns the data directory,
 * data-dir-lock.ts); `close()` removes the socket file if it is still the one it created. Returns undefined, after telling
 * `onNote`, when the socket cannot be created (path too long, read-only directory): `up` then runs without it.
 */
export async function startControlServer(
  path: string,
  deps: ControlDeps,
  onNote: (line: string) => void = () => undefined,
): Promise<ControlServer | undefined> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    onNote(
      `control socket ${path} is longer than ${MAX_SOCKET_PATH} bytes: "blackcloud grants" and "devices disable" ` +
        'cannot reach this process (use a shorter --data-dir)',
    );
    return undefined;
  }
  const sockets = new Set<Socket>();
  let listening: { dev: number; ino: number } | undefined;
  const server: Server = createServer((socket) => {
    let buffered = '';
    let answered = false;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.setEncoding('utf8');
    // A client that connects and says nothing is dropped: it must not hold `up` (or its shutdown) open.
    socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    const answer = (response: ControlResponse) => {
      answered = true;
      socket.end(`${JSON.stringify(response)}\n`);
    };
    socket.on('data', (chunk: string) => {
      if (answered) return;
      buffered += chunk;
      if (Buffer.byteLength(buffered) > MAX_CONTROL_REQUEST_BYTES) {
        answer({ ok: false, error: `request longer than ${MAX_CONTROL_REQUEST_BYTES} bytes` });
        return;
      }
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      let request: unknown;
      try {
        request = JSON.parse(buffered.slice(0, newline));
      } catch {
        answer({ ok: false, error: 'the request is not one JSON line' });
        return;
      }
      answered = true;
      void handleControlRequest(request, deps).then((response) => {
        if (!socket.destroyed) socket.end(`${JSON.stringify(response)}\n`);
      });
    });
  });
  try {
    await rm(path, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(path, 0o600);
    listening = await stat(path);
  } catch (error) {
    server.close();
    onNote(
      `control socket ${path} cannot be created (${(error as NodeJS.ErrnoException).code ?? String(error)}): ` +
        '"blackcloud grants" and "devices disable" cannot reach this process',
    );
    return undefined;
  }
  server.on('error', () => undefined);
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => {
          // Only our own socket file: never one another process put there since.
          void stat(path)
            .then((info) => {
              const ours = info.dev === listening?.dev && info.ino === listening.ino;
              return ours ? rm(path, { force: true }) : undefined;
            })
            .catch(() => undefined)
            .finally(resolve);
        });
      }),
  };
}
