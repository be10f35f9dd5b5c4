/**
 * The `blackcloud` command line: parses argv, runs the command, prints any error as one line
 * (`blackcloud: <what was wrong>; fix: ...`) and exits non-zero (128 + the signal's number for a start-up stopped by a
 * signal). Set BLACKCLOUD_DEBUG=1 for stack traces. Signals, EPIPE and uncaught errors: cli/exit-paths.ts.
 */
import { CommanderError } from 'commander';
import { errorLine, processIo } from './cli-io.ts';
import { StoppedBySignal } from './exit-paths.ts';
import { createProgram } from './program.ts';

export async function main(argv: readonly string[]): Promise<number> {
  const program = createProgram(processIo);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander already printed its one-line message (or the help / version text).
      return error.exitCode;
    }
    processIo.err(errorLine(error));
    if (error instanceof StoppedBySignal) return error.exitCode;
    if (process.env.BLACKCLOUD_DEBUG === '1' && error instanceof Error) processIo.err(String(error.stack));
    return 1;
  }
}

const code = await main(process.argv.slice(2));
// An uncaught error already set 1 (cli/exit-paths.ts): a command that then stopped cleanly does not undo it.
if (process.exitCode === undefined || process.exitCode === 0) process.exitCode = code;
