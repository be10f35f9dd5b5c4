/**
 * Errors of the files every part reads (device.json and the operator's config files): misuse and bad
 * configuration, never untrusted network input. Every message names the field, the value received (never key
 * material) and the fix, in one line, so a CLI can print `blackcloud: <message>` and exit non-zero.
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

/** A short, log-safe rendering of a received value for error messages (never more than 64 characters). */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value === null || typeof value !== 'object') return String(value);
  return 'an object';
}
