/**
 * The AWS adapters' error family. Misuse, bad configuration and unavailable dependencies become typed errors with
 * a `name`, a `cause` and a message naming what was wrong, the value received and what to do about it.
 * `awsErrorCode` reads the service error code off an SDK v3 exception (or anything else) without throwing.
 */

export class AwsAdapterError extends Error {
  override name = 'AwsAdapterError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A configuration value (environment variable or constructor option) is missing or invalid. */
export class AwsConfigError extends AwsAdapterError {
  override name = 'AwsConfigError';
}

/** The nonce table could not answer: the receiver must fail closed (no grant). */
export class NonceStoreUnavailableError extends AwsAdapterError {
  override name = 'NonceStoreUnavailableError';
}

/** A device's registry entry (thing attributes or key item) is malformed: an operator must fix it. */
export class DeviceRecordError extends AwsAdapterError {
  override name = 'DeviceRecordError';
}

/** A security-group call failed for a reason other than "already open" / "already gone" / throttling. */
export class FirewallApiError extends AwsAdapterError {
  override name = 'FirewallApiError';
}

/** Every broker security group is full and the wait queue is at its bound: the grant was not opened. */
export class GrantQueueFullError extends AwsAdapterError {
  override name = 'GrantQueueFullError';
}

/** A grant waited for a free rule slot until it expired (or was revoked) and was never opened. */
export class GrantNotOpenedError extends AwsAdapterError {
  override name = 'GrantNotOpenedError';
}

/** A grant asked for nothing the broker security groups may open (none of its entries is a broker port). */
export class GrantNotPermittedError extends AwsAdapterError {
  override name = 'GrantNotPermittedError';
}

/** A grant message (SQS body) or grants-table item is not in the documented shape. */
export class GrantRecordError extends AwsAdapterError {
  override name = 'GrantRecordError';
}

/** The service error code of an SDK v3 exception (`name`, or the query protocol's `Code`), else the JS error name. */
export function awsErrorCode(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const e = error as { Code?: unknown; name?: unknown; code?: unknown };
    if (typeof e.Code === 'string' && e.Code !== '') return e.Code;
    if (typeof e.name === 'string' && e.name !== '' && e.name !== 'Error') return e.name;
    if (typeof e.code === 'string' && e.code !== '') return e.code;
  }
  return 'UnknownError';
}

/** A short, single-line description of an error for logs and audit events (never key material: errors carry none). */
export function describeError(error: unknown): string {
  if (error instanceof Error) return `${awsErrorCode(error)}: ${error.message}`;
  return String(error);
}
