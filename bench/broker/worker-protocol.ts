/**
 * The messages between bench/broker/session-bench.ts (the parent) and its client processes
 * (bench/broker/session-worker.ts) over Node's IPC channel. Every command carries an `id`; the worker answers each
 * with exactly one reply of the same `id` (`error` when the command failed). Types only.
 */
import type { ClientTls } from '../../test/support/mosquitto.ts';

/** One device a client process holds a session for: its identity (certificate CN), credentials and source address. */
export interface AssignedDevice {
  readonly id: string;
  readonly tls: ClientTls;
  readonly localAddress: string;
}

export type WorkerCommand =
  | {
      readonly type: 'init';
      readonly port: number;
      readonly keepaliveSeconds: number;
      /** QoS 1 telemetry messages per device per minute (0: none). */
      readonly telemetryPerMinute: number;
      readonly connectTimeoutMs: number;
      readonly devices: readonly AssignedDevice[];
    }
  /** Open the sessions of the first `count` devices that are not connected, `concurrency` at a time. */
  | { readonly type: 'open'; readonly count: number; readonly concurrency: number }
  /** Cut every session (the TCP connection closed without MQTT DISCONNECT): an outage as the broker sees it. */
  | { readonly type: 'drop' }
  /** Every held session publishes one QoS 1 message at once; resolves when every PUBACK is in. */
  | { readonly type: 'burst' }
  | { readonly type: 'stats' }
  | { readonly type: 'exit' };

export interface OpenResult {
  /** Connect to CONNACK, ms, one per session opened. */
  readonly latenciesMs: number[];
  /** Failed attempts by error message. */
  readonly errors: Record<string, number>;
  readonly elapsedMs: number;
}

export interface WorkerStats {
  /** Sessions connected now. */
  readonly held: number;
  /** Sessions closed by anything but `drop` since the start. */
  readonly lost: number;
  readonly published: number;
  readonly acked: number;
  readonly publishFailed: number;
  /** The distinct local (source) addresses of the held sessions' sockets. */
  readonly localAddresses: readonly string[];
}

export interface BurstResult {
  readonly messages: number;
  readonly failed: number;
  readonly elapsedMs: number;
}

export type WorkerReply =
  | { readonly id: number; readonly type: 'ready' }
  | { readonly id: number; readonly type: 'opened'; readonly result: OpenResult }
  | { readonly id: number; readonly type: 'dropped' }
  | { readonly id: number; readonly type: 'burst'; readonly result: BurstResult }
  | { readonly id: number; readonly type: 'stats'; readonly stats: WorkerStats }
  | { readonly id: number; readonly type: 'error'; readonly message: string };
