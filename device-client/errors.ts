/**
 * The device client's errors: misuse and bad configuration, never untrusted network input.
 * Every message names the field or flag, the value received (never key material) and the fix, in one line,
 * so the CLI can print `blackcloud: <message>` and exit non-zero.
 */

/** A device config file (device.json) that cannot be read or does not validate. */
export class DeviceConfigError extends Error {
  override readonly name = 'DeviceConfigError';
  /** The file, as given. */
  readonly file: string;
  /** The offending field as a dotted path (`spa.port`), or '' when the file as a whole is the problem. */
  readonly field: string;

  constructor(file: string, field: string, message: string, options?: { cause?: unknown }) {
    super(`device file ${file}: ${field === '' ? '' : `field "${field}" `}${message}`, options);
    this.file = file;
    this.field = field;
  }
}

/** A command-line flag or argument with a value the client cannot use. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  /** The flag or argument, e.g. `--server`. */
  readonly flag: string;

  constructor(flag: string, message: string, options?: { cause?: unknown }) {
    super(`${flag}: ${message}`, options);
    this.flag = flag;
  }
}

/** The broker could not be reached (or refused the session) before the deadline. */
export class BrokerConnectError extends Error {
  override readonly name = 'BrokerConnectError';
  readonly url: string;
  readonly attempts: number;

  constructor(url: string, attempts: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.url = url;
    this.attempts = attempts;
  }
}

/** A short, log-safe rendering of a received value for error messages (never more than 64 characters). */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value === null || typeof value !== 'object') return String(value);
  return 'an object';
}
