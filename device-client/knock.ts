/**
 * Builds one SPA knock for a device, in its native BC1 format or in the fwknop format (FKO 3.0.0), from its
 * config, the current time and fresh randomness. Sending is `sendDatagram`'s job.
 *
 * Contract:
 * - Native: timestamp = `now()`, duration = the device's `spa.durationSeconds`, access = its `access` list, no
 *   claimed source (the receiver grants the address it observes), a 12-byte nonce from `randomBytes` [BC1-8].
 * - fwknop: message type 1 (access), allow IP 0.0.0.0 (= "the packet's source", like `fwknop -s`), or type 3
 *   with a client timeout when `spa.durationSeconds` > 0; an 8-byte salt and 16 random digits from `randomBytes`.
 * - Time and randomness come in as parameters; the result is the datagram's bytes (and, native, its key id and
 *   nonce: the plain profile's connect credential derives from them).
 * - Throws `DeviceConfigError` (field `spa.format`) when the config has no keys for the requested format.
 */

import { DeviceConfigError } from '../functions/core/config-errors.ts';
import type { KnockIdentity } from '../functions/core/connect-credential.ts';
import type { DeviceConfig, KnockFormat } from '../functions/core/device-config.ts';
import { encodeBc1 } from '../spa/bc1.ts';
import { encodeFwknop } from '../spa/fwknop.ts';
import { BC1_NONCE_LENGTH, FKO_RANDOM_DIGITS, FKO_SALT_LENGTH } from '../spa/limits.ts';

export interface KnockIo {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  randomBytes(length: number): Uint8Array;
}

export interface Knock {
  readonly format: KnockFormat;
  readonly bytes: Uint8Array;
  /** Native knocks: what the plain profile's one-time connect credential derives from (connect-credential.ts). */
  readonly identity?: KnockIdentity;
}

/** 16 decimal digits from random bytes, by rejection sampling (no modulo bias). */
export function randomDigits(randomBytes: (length: number) => Uint8Array, count: number): string {
  let digits = '';
  while (digits.length < count) {
    for (const byte of randomBytes(count)) {
      if (byte < 250 && digits.length < count) digits += String(byte % 10);
    }
  }
  return digits;
}

export function buildKnock(
  config: DeviceConfig,
  io: KnockIo,
  format: KnockFormat = config.spa.format,
): Knock {
  if (format === 'native') {
    const native = config.spa.native;
    if (native === undefined) {
      throw new DeviceConfigError(
        config.file,
        'spa.native',
        'is missing, so no native knock can be made; fix: use --format fwknop or re-provision the device',
      );
    }
    const nonce = io.randomBytes(BC1_NONCE_LENGTH);
    const bytes = encodeBc1(
      { timestampMs: io.now(), durationSeconds: config.spa.durationSeconds, access: config.access },
      { keyId: native.keyId, key: native.key, nonce },
    );
    return { format, bytes, identity: { deviceId: config.deviceId, keyId: native.keyId, nonce } };
  }
  const fwknop = config.spa.fwknop;
  if (fwknop === undefined) {
    throw new DeviceConfigError(
      config.file,
      'spa.fwknop',
      'is missing, so no fwknop knock can be made; fix: use --format native or add spa.fwknop keys',
    );
  }
  const access = `0.0.0.0,${config.access.map((entry) => `${entry.protocol}/${entry.port}`).join(',')}`;
  const withTimeout = config.spa.durationSeconds > 0;
  const wire = encodeFwknop(
    {
      username: fwknop.username,
      timestamp: Math.floor(io.now() / 1000),
      messageType: withTimeout ? 3 : 1,
      message: access,
      ...(withTimeout ? { clientTimeout: config.spa.durationSeconds } : {}),
    },
    { encryptionKey: fwknop.encryptionKey, hmacKey: fwknop.hmacKey, hmacType: fwknop.hmacType },
    { salt: io.randomBytes(FKO_SALT_LENGTH), random: randomDigits(io.randomBytes, FKO_RANDOM_DIGITS) },
  );
  return { format, bytes: wire };
}
