#!/usr/bin/env node
// Launcher for the `blackcloud` command: Node.js 24 runs the TypeScript CLI as is (type stripping), no build step.
// The entry (exit paths first, then the command line) is cli/launch.ts, the same one the packed CLI is built from.
await import('../launch.ts');
