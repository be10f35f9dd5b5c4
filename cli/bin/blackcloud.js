#!/usr/bin/env node
// Launcher for the `blackcloud` command: Node.js 24 runs the TypeScript CLI as is (type stripping), no build step.
// The exit paths first (cli/exit-paths.ts): a signal or an EPIPE during the rest of the start-up is handled too.
const { exitPaths } = await import('../exit-paths.ts');
exitPaths.install();
await import('../main.ts');
