/** Typed errors of the nftables firewall. Messages name the value received and the fix. */

export const NFTABLES_UNAVAILABLE_FIX =
  'nftables firewall needs root and the nft command: run as root, or use --firewall gate';

/** `nft` is missing, or we lack the privilege to change the ruleset. */
export class NftablesUnavailableError extends Error {
  override readonly name: string = 'NftablesUnavailableError';

  constructor(detail: string, options?: { cause?: unknown }) {
    super(`${NFTABLES_UNAVAILABLE_FIX} (${detail})`, options);
  }
}

/** A value that cannot be written into an nft ruleset (refused before anything reaches `nft`). */
export class NftablesInputError extends Error {
  override readonly name: string = 'NftablesInputError';
  /** The option or grant field at fault, e.g. 'table', 'ports[0].port', 'grants[2].address'. */
  readonly field: string;

  constructor(field: string, message: string) {
    super(message);
    this.field = field;
  }
}

/** `nft` ran and refused the ruleset or command. */
export class NftablesCommandError extends Error {
  override readonly name: string = 'NftablesCommandError';
  readonly args: readonly string[];
  readonly stderr: string;

  constructor(
    args: readonly string[],
    exitCode: number | null,
    stderr: string,
    options?: { cause?: unknown },
  ) {
    super(
      `nft ${args.join(' ')} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || 'no error output'}`,
      options,
    );
    this.args = args;
    this.stderr = stderr;
  }
}
