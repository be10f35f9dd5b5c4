/**
 * What CLI commands write to: one line at a time to stdout (results, `--json` records) or stderr (progress,
 * errors). Injected so commands can run in-process in tests; `processIo` is the real one.
 */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
}

/** Writes nothing to a stream that failed (its reader went away, `| head`): cli/exit-paths.ts swallows the error. */
export const processIo: CliIo = Object.freeze({
  out: (line: string) => {
    if (process.stdout.writable) process.stdout.write(`${line}\n`);
  },
  err: (line: string) => {
    if (process.stderr.writable) process.stderr.write(`${line}\n`);
  },
});

/** One error as the single line the CLI prints: `blackcloud: <message>` (newlines folded). */
export function errorLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return `blackcloud: ${message.replace(/\s*\n\s*/g, ' ')}`;
}
