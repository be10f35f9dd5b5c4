/**
 * AuditSink adapters: JSON lines to stdout, a file or any writable stream (the AWS receiver ships stdout with
 * the CloudWatch agent), and an in-memory sink for tests and embedding.
 *
 * Contract:
 * - One event = one line: `JSON.stringify` of the event as given (times in ms since the epoch), newline-ended.
 * - Key material can never be written: events carry no key fields by type, and `formatAuditEvent` also replaces
 *   any byte array and any property named like a key (`key`, `encryptionKey`, `hmacKey`, `secret`, ...) with
 *   "[redacted]" as a second line of defence.
 * - `write` never throws; a failing stream is reported once through `onError` (default: stderr) and then ignored.
 * - A file destination is opened for append with mode 0600 (parent directories created, 0700), never through a
 *   symbolic link (open-flags.ts): a link at its name throws `AuditFileError` naming the file and the fix.
 */
import { createWriteStream, fchmodSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Writable } from 'node:stream';
import type { AuditEvent, AuditSink } from '../core/interfaces.ts';
import { APPEND_FLAGS, symlinkRefusal } from './open-flags.ts';

const REDACTED = '[redacted]';

/** The audit file cannot be opened safely (a symbolic link at its name). */
export class AuditFileError extends Error {
  override readonly name = 'AuditFileError';
}
const SECRET_NAME = /^(key|keys|secret|password|encryptionKey|hmacKey|nativeKeys|privateKey)$/i;

/** One JSON line (without the newline), with byte arrays and key-named fields redacted. */
export function formatAuditEvent(event: AuditEvent): string {
  return JSON.stringify(event, function redact(this: Record<string, unknown>, name: string, value: unknown) {
    const raw = name === '' ? value : this[name];
    if (ArrayBuffer.isView(raw) || raw instanceof ArrayBuffer) return REDACTED;
    if (name !== '' && SECRET_NAME.test(name)) return REDACTED;
    return value;
  });
}

export type AuditDestination = 'stdout' | { readonly file: string } | { readonly stream: Writable };

export interface AuditSinkOptions {
  readonly destination: AuditDestination;
  /** Called once, on the first write error. @default a line on stderr */
  readonly onError?: (error: Error) => void;
}

export interface ClosableAuditSink extends AuditSink {
  /** Flushes and closes a file destination; stdout and caller-owned streams are left open. */
  close(): Promise<void>;
}

export function createAuditSink(options: AuditSinkOptions): ClosableAuditSink {
  const { destination } = options;
  let reported = false;
  const report = (error: Error): void => {
    if (reported) return;
    reported = true;
    (
      options.onError ??
      ((e: Error) => process.stderr.write(`audit sink error (events may be lost): ${e.message}\n`))
    )(error);
  };

  let stream: Writable;
  let owned = false;
  if (destination === 'stdout') {
    stream = process.stdout;
  } else if ('file' in destination) {
    mkdirSync(dirname(destination.file), { recursive: true, mode: 0o700 });
    let fd: number;
    try {
      fd = openSync(destination.file, APPEND_FLAGS, 0o600);
    } catch (error) {
      const refusal = symlinkRefusal(destination.file, error);
      if (refusal === undefined) throw error;
      throw new AuditFileError(`audit file ${refusal}`, { cause: error });
    }
    fchmodSync(fd, 0o600);
    stream = createWriteStream('', { fd });
    owned = true;
  } else {
    stream = destination.stream;
  }
  stream.on('error', report);

  return {
    write(event) {
      try {
        stream.write(`${formatAuditEvent(event)}\n`);
      } catch (error) {
        report(error instanceof Error ? error : new Error(String(error)));
      }
    },
    close() {
      if (!owned) return Promise.resolve();
      return new Promise<void>((resolve) => {
        stream.end(() => resolve());
      });
    },
  };
}

/** Keeps events in an array (tests, `blackcloud up` status). Real sink, no I/O. */
export class MemoryAuditSink implements AuditSink {
  readonly events: AuditEvent[] = [];

  write(event: AuditEvent): void {
    this.events.push(event);
  }

  ofType<T extends AuditEvent['type']>(type: T): Extract<AuditEvent, { type: T }>[] {
    return this.events.filter((event): event is Extract<AuditEvent, { type: T }> => event.type === type);
  }

  /** The JSON lines the stream sinks would have written. */
  lines(): string[] {
    return this.events.map(formatAuditEvent);
  }
}
