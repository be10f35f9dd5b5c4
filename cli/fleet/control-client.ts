/**
 * Client of a running `blackcloud up`'s control socket (functions/local/control-server.ts): one JSON request
 * line, one JSON response line.
 *
 * Contract: resolves `undefined` when no `up` runs on that data directory (no socket file, or a stale one nobody
 * listens on); rejects with a `FleetError` when `up` answers `{ok:false}`, answers garbage, or does not answer
 * within `timeoutMs`.
 */
import { createConnection } from 'node:net';
import type { ControlResponse } from '../../functions/local/control-server.ts';
import { FleetError } from './fleet.ts';

export type ControlRequest =
  | { readonly op: 'grants' }
  | { readonly op: 'revoke'; readonly address: string }
  | { readonly op: 'revoke'; readonly deviceId: string }
  | { readonly op: 'cut-off'; readonly deviceIds: readonly string[] };

export type ControlAnswer = Exclude<ControlResponse, { ok: false }>;

export function controlRequest(
  socketPath: string,
  request: ControlRequest,
  timeoutMs = 10_000,
): Promise<ControlAnswer | undefined> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(socketPath);
    let text = '';
    let settled = false;
    const finish = (action: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      action();
    };
    const timer = setTimeout(
      () =>
        finish(() =>
          reject(new FleetError(`blackcloud up (${socketPath}) did not answer within ${timeoutMs} ms`)),
        ),
      timeoutMs,
    );
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (chunk: string) => {
      text += chunk;
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED') finish(() => resolve(undefined));
      else finish(() => reject(new FleetError(`control socket ${socketPath}: ${error.message}`)));
    });
    socket.on('end', () => {
      finish(() => {
        let response: ControlResponse;
        try {
          response = JSON.parse(text) as ControlResponse;
        } catch {
          reject(new FleetError(`blackcloud up (${socketPath}) answered something that is not JSON`));
          return;
        }
        if (response.ok) resolve(response);
        else reject(new FleetError(`blackcloud up refused the request: ${response.error}`));
      });
    });
  });
}
