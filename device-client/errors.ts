/**
 * The device library's own errors (reaching the broker). Errors of the device file are DeviceConfigError
 * (functions/core/config-errors.ts). Messages never carry key material.
 */

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
