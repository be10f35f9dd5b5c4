/**
 * The broker-sessions bench's client processes (bench/broker/session-worker.ts) seen from the parent: `startWorker`
 * spawns one under `prlimit --nofile=N:N` with an IPC channel and returns `call(command)`, which resolves with the
 * reply of the same id (rejects on an `error` reply or when the process exits with the command pending);
 * `callAll` sends one command to every worker and checks the reply type; `countFor` is how many of the first
 * `target` devices a worker holds (device i belongs to worker i % workers); `mergeOpen` and `sumStats` add up the
 * workers' answers. The protocol is bench/broker/worker-protocol.ts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import type { OpenResult, WorkerCommand, WorkerReply, WorkerStats } from './worker-protocol.ts';

const WORKER_FILE = join(import.meta.dirname, 'session-worker.ts');

export interface Worker {
  readonly child: ChildProcess;
  readonly pid: number;
  call(command: WorkerCommand): Promise<WorkerReply>;
}

export async function startWorker(prlimit: string, fileLimit: number): Promise<Worker> {
  const child = spawn(prlimit, [`--nofile=${fileLimit}:${fileLimit}`, process.execPath, WORKER_FILE], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const pending = new Map<
    number,
    { resolve: (reply: WorkerReply) => void; reject: (error: Error) => void }
  >();
  let nextId = 1;
  child.on('message', (reply: WorkerReply) => {
    const waiter = pending.get(reply.id);
    pending.delete(reply.id);
    if (reply.type === 'error') waiter?.reject(new Error(`client process: ${reply.message}`));
    else waiter?.resolve(reply);
  });
  child.once('exit', (code, signal) => {
    for (const waiter of pending.values()) {
      waiter.reject(new Error(`client process exited (${code ?? signal}) with a command pending`));
    }
    pending.clear();
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', reject);
  });
  return {
    child,
    pid: child.pid!,
    call(command) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.send({ ...command, id });
      });
    },
  };
}

export async function callAll<T extends WorkerReply['type']>(
  workers: readonly Worker[],
  command: (w: number) => WorkerCommand,
  type: T,
): Promise<Extract<WorkerReply, { type: T }>[]> {
  const replies = await Promise.all(workers.map((worker, w) => worker.call(command(w))));
  for (const reply of replies) {
    if (reply.type !== type) throw new Error(`client process answered ${reply.type}, expected ${type}`);
  }
  return replies as Extract<WorkerReply, { type: T }>[];
}

/** Devices of worker w among the first `target` (device i belongs to worker i % workers). */
export function countFor(target: number, w: number, workers: number): number {
  return target > w ? Math.floor((target - 1 - w) / workers) + 1 : 0;
}

export function mergeOpen(results: readonly OpenResult[]): {
  latencies: number[];
  errors: Record<string, number>;
  errorCount: number;
} {
  const errors: Record<string, number> = {};
  for (const result of results) {
    for (const [message, n] of Object.entries(result.errors)) errors[message] = (errors[message] ?? 0) + n;
  }
  return {
    latencies: results.flatMap((result) => result.latenciesMs),
    errors,
    errorCount: Object.values(errors).reduce((a, b) => a + b, 0),
  };
}

export function sumStats(stats: readonly WorkerStats[]): WorkerStats {
  return stats.reduce((a, b) => ({
    held: a.held + b.held,
    lost: a.lost + b.lost,
    published: a.published + b.published,
    acked: a.acked + b.acked,
    publishFailed: a.publishFailed + b.publishFailed,
    localAddresses: [...new Set([...a.localAddresses, ...b.localAddresses])],
  }));
}
