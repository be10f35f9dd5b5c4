/**
 * The one error the fwknop codec throws: caller misuse (keys of the wrong length or an unknown HMAC type, an
 * input the format cannot carry, randomness of the wrong shape). Untrusted wire bytes never throw; they are
 * rejected with a result value (spa/result.ts). Messages name the field, the value received (never key material)
 * and the fix.
 */
export class FwknopUsageError extends RangeError {
  override readonly name = 'FwknopUsageError';
  /** The offending field, as a path into the call's arguments, e.g. `input.clientTimeout` or `keys.hmacKey`. */
  readonly field: string;

  constructor(field: string, message: string, options?: { cause?: unknown }) {
    super(`${field}: ${message}`, options);
    this.field = field;
  }
}

/** Short, log-safe rendering of a received value for error messages (byte arrays by length only). */
export function describeFwknopValue(value: unknown): string {
  if (value instanceof Uint8Array) return `${value.constructor.name} of ${value.length} bytes`;
  if (typeof value === 'string') return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
  if (value === null || typeof value !== 'object') return String(value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  return Object.prototype.toString.call(value);
}
