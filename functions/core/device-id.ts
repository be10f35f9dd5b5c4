/**
 * The device-id rule, stated once. A device id becomes the client certificate's CN, a topic level, a dynsec or
 * IoT thing name and a file name, so it is plain: 1..64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter
 * or digit; never `/`, `+`, `#`, `$` or NUL, so an id can never widen its own topic prefix.
 */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
