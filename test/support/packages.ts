/**
 * The npm packages as a user gets them (docs/install.md): built and packed by packaging/build-packages.ts into a
 * temp folder, then installed with the real `npm` (the registry is reachable and the cache warm after `npm ci`)
 * into an empty folder or an empty global prefix, outside the repository. Child processes get an explicit
 * timeout and a PATH whose first `node` is this one (Node 24).
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import {
  type BuiltPackage,
  buildPackages,
  npmEnv,
  type PackedPackage,
  packPackages,
} from '../../packaging/build-packages.ts';
import { PROJECT_ROOT } from '../functions/local/helpers.ts';

const execFileAsync = promisify(execFile);

/** Builds and packs every package into `dir`; returns them by name. */
export async function packAll(dir: string): Promise<Map<string, PackedPackage>> {
  const built: BuiltPackage[] = await buildPackages(PROJECT_ROOT, dir);
  const packed = await packPackages(built, dir);
  return new Map(packed.map((item) => [item.name, item]));
}

/** The environment of a program run as a user would: no npm_* variables, this Node first on PATH. */
export function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return npmEnv({ PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, ...extra });
}

/** `npm <args>` in `cwd`, failing with npm's output; 80 s at most. */
export async function npm(args: readonly string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync('npm', [...args], { cwd, env: userEnv(), timeout: 80_000 });
    return stdout;
  } catch (error) {
    const failure = error as { stdout?: string; stderr?: string; message: string };
    throw new Error(`npm ${args.join(' ')} failed: ${failure.message}\n${failure.stdout}\n${failure.stderr}`);
  }
}

/** The install flags of docs/install.md (the cache is warm; no audit or funding requests). */
export const INSTALL_FLAGS = ['--prefer-offline', '--no-audit', '--no-fund'] as const;

/** An empty project folder (a bare package.json, ES modules) for `npm install <tarball>`. */
export async function emptyProject(dir: string): Promise<void> {
  await writeFile(join(dir, 'package.json'), `${JSON.stringify({ private: true, type: 'module' })}\n`);
}

/** Installed packages under `dir` (`npm ls --all --parseable`, the root excluded). */
export async function installedCount(dir: string): Promise<number> {
  const lines = (await npm(['ls', '--all', '--parseable'], dir)).split('\n').filter((line) => line !== '');
  return lines.filter((line) => line !== dir).length;
}
