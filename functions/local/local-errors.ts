/**
 * Typed errors of the local black cloud (`blackcloud up`, `blackcloud devices add`): misuse and environment.
 * Messages name the flag or file, the value received and the fix, in one line.
 */

/** A device name that cannot be used, or is taken. */
export class DeviceNameError extends Error {
  override readonly name = 'DeviceNameError';
  readonly deviceId: string;

  constructor(deviceId: string, message: string, options?: { cause?: unknown }) {
    super(`device name ${JSON.stringify(deviceId)}: ${message}`, options);
    this.deviceId = deviceId;
  }
}

/** A TCP or UDP port `up` needs is held by another process. */
export class PortInUseError extends Error {
  override readonly name = 'PortInUseError';
  readonly protocol: 'tcp' | 'udp';
  readonly host: string;
  readonly port: number;

  constructor(
    protocol: 'tcp' | 'udp',
    host: string,
    port: number,
    flag: string,
    options?: { cause?: unknown },
  ) {
    super(
      `${protocol.toUpperCase()} port ${port} on ${host} is already in use (another "blackcloud up"?): stop the ` +
        `other process or choose another port with ${flag}`,
      options,
    );
    this.protocol = protocol;
    this.host = host;
    this.port = port;
  }
}

/** The data directory cannot be used (not a directory, not writable, ...). */
export class DataDirError extends Error {
  override readonly name = 'DataDirError';
  readonly path: string;

  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super(`data directory ${path}: ${message}`, options);
    this.path = path;
  }
}

/** A start of the local black cloud stopped by its caller (a signal): everything it had opened was closed. */
export class LocalCloudStoppedError extends Error {
  override readonly name = 'LocalCloudStoppedError';
  readonly reason: string;

  constructor(reason: string, options?: { cause?: unknown }) {
    super(`${reason} during start-up: stopped, everything opened so far was closed`, options);
    this.reason = reason;
  }
}

/** `--transport plain` with a knock format that cannot carry its connect credential (provision-device.ts). */
export class PlainFormatError extends Error {
  override readonly name = 'PlainFormatError';
}
