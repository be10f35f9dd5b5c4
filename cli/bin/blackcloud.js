#!/usr/bin/env node
// Launcher for the `blackcloud` command: registers tsx's ESM loader, then runs the TypeScript CLI as is
// (no build step). Needs Node >= 20.6 (module.register).
import { register } from 'tsx/esm/api';

register();
await import('../main.ts');
