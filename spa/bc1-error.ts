/**
 * The one error BC1 throws: caller misuse (a payload or option the format cannot carry, a key or nonce of the
 * wrong length). Untrusted bytes never throw; they are rejected with a result value (spa/result.ts).
 * Messages name the field, the value received (never key material) and the fix.
 */
export class Bc1UsageError extends RangeError {
  override readonly name = 'Bc1UsageError';
  /** The offending field, as a path into the call's arguments, e.g. `payload.access[2].port` or `opts.key`. */
  readonly field: string;

  constructor(field: string, message: string, options?: { cause?: unknown }) {
    super(`${field}: ${message}`, options);
    this.field = field;
  }
}

/** Short, log-safe rendering of a received value for error messages. */
export function describeValue(value: unknown): string {
  if (value instanceof Uint8Array) return `${value.constructor.name} of ${value.length} bytes`;
  if (typeof value === 'string') return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value === null || typeof value !== 'object') return String(value);
  return Object.prototype.toString.call(value);
}
