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

/**
 * Why a session that `connectDevice` kept up ended for good: the operator `disabled` or `removed` the device (the
 * broker's session notice), the broker `refused` it on a reconnect (a CONNACK reason code), or it stayed
 * `unreachable` past the caller's bound (`maxConsecutiveFailures`, `giveUpAfterMs`).
 */
export type SessionEndReason = 'disabled' | 'removed' | 'refused' | 'unreachable';

/** The session ended and the library stopped retrying; the message says why and what fixes it. */
export class SessionEndedError extends Error {
  override readonly name = 'SessionEndedError';
  readonly reason: SessionEndReason;
  readonly deviceId: string;
  /** Whether retrying with the same device file could ever help ('unreachable' only). */
  readonly retryable: boolean;

  constructor(reason: SessionEndReason, deviceId: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
    this.deviceId = deviceId;
    this.retryable = reason === 'unreachable';
  }
}
