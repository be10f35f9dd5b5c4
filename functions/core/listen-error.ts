/**
 * A socket that could not listen or bind, for every listener blackcloud opens (the receiver's UDP port, the
 * embedded broker, the gate firewall): one base error carrying the address and the system error code, and the one
 * mapping from that code to the fix each listener words for its own flags.
 *
 * Contract: `listenFix` picks `inUse` for EADDRINUSE, `permission` for EACCES (a privileged port),
 * `notLocal` for EADDRNOTAVAIL (not an address of this host) and `other` for anything else, an absent code
 * included. Pure; never throws.
 */

/** What to do about each way a listen can fail, in the words of one listener. */
export interface ListenFixes {
  /** EADDRINUSE: another socket holds the port. */
  readonly inUse: string;
  /** EACCES: the port needs privileges. */
  readonly permission: string;
  /** EADDRNOTAVAIL: the address is not one of this host's. */
  readonly notLocal: string;
  /** Any other code, or none. */
  readonly other: string;
}

export function listenFix(code: string | undefined, fixes: ListenFixes): string {
  if (portInUse(code)) return fixes.inUse;
  switch (code) {
    case 'EACCES':
      return fixes.permission;
    case 'EADDRNOTAVAIL':
      return fixes.notLocal;
    default:
      return fixes.other;
  }
}

/** True when the code says another socket holds the port (EADDRINUSE): the fix `inUse` names. */
export function portInUse(code: string | undefined): boolean {
  return code === 'EADDRINUSE';
}

/** The system error code of a failed listen or bind (e.g. 'EADDRINUSE'), if it has one. */
export function listenErrorCode(cause: unknown): string | undefined {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** A listener could not listen on `host` port `port`; `code` is the system error code. */
export class ListenError extends Error {
  override readonly name: string = 'ListenError';
  readonly host: string;
  readonly port: number;
  /** The system error code, e.g. 'EADDRINUSE', 'EADDRNOTAVAIL', 'EACCES'. */
  readonly code: string | undefined;

  constructor(
    host: string,
    port: number,
    code: string | undefined,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.host = host;
    this.port = port;
    this.code = code;
  }
}
