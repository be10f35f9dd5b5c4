#!/usr/bin/env node
// Launcher for the `blackcloud` command: Node.js 24 runs the TypeScript CLI as is (type stripping), no build step.
await import('../main.ts');
