/**
 * How a device reaches the broker (docs/threat-model.md, "The plain profile"). Pure vocabulary.
 *
 * - `tls` (the default): mutual TLS, the client certificate's common name is the device id.
 * - `plain` (opt-in per device, for devices that cannot do TLS): plain MQTT on the broker's plain listener, dark
 *   like the TLS one; username = device id, password = the one-time credential of the knock that opened the grant
 *   (connect-credential.ts). Knocks must be BC1 (the credential is derived from its key id and nonce).
 */
export const DEVICE_TRANSPORTS = ['tls', 'plain'] as const;
export type DeviceTransport = (typeof DEVICE_TRANSPORTS)[number];
export const DEFAULT_DEVICE_TRANSPORT: DeviceTransport = 'tls';

/** The transport of a directory entry or config that may not name one (older files): `tls`. */
export function transportOf(entry: { readonly transport?: DeviceTransport | undefined }): DeviceTransport {
  return entry.transport ?? DEFAULT_DEVICE_TRANSPORT;
}

/** The plain profile's port when none is named (MQTT's registered port without TLS): `up`'s plain port for a plain
 *  device enrolled before any was opened, and the device library's for an `mqtt://` URL without a port. */
export const DEFAULT_PLAIN_PORT = 1883;
