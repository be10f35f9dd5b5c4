/**
 * The `blackcloud` command's entry, in a checkout (cli/bin/blackcloud.js) and in the packed CLI (packaging/packages.ts):
 * the exit paths first (cli/exit-paths.ts), so that a signal or an EPIPE during the rest of the start-up is handled
 * too; then the command line (main.ts), loaded only after them.
 */
import { exitPaths } from './exit-paths.ts';

exitPaths.install();
await import('./main.ts');
