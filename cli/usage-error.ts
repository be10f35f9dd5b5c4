/** The operator CLI's usage error: a flag or argument the command cannot use; the message names the fix. */

/** A command-line flag or argument with a value the client cannot use. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  /** The flag or argument, e.g. `--server`. */
  readonly flag: string;

  constructor(flag: string, message: string, options?: { cause?: unknown }) {
    super(`${flag}: ${message}`, options);
    this.flag = flag;
  }
}
