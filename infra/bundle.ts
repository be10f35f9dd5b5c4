/**
 * Bundles one TypeScript entrypoint into one ES module file with esbuild (in-process, offline, no Docker), for a
 * CDK asset: the receiver's file for the instance, or a Lambda handler's `index.mjs`. Every dependency (AWS SDK v3
 * included) is inside the bundle, so the instance needs only Node 24 and Lambda only its runtime. The output is
 * deterministic, so the asset hash changes only when the code does.
 *
 * `bundleEntry` writes into a fresh temporary directory and returns it; the caller stages it as an asset (CDK
 * copies it into the cloud assembly at construction time) and then calls `dispose()`.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';
import { BundlingError } from './errors.ts';

/** The repository root (infra/..): relative entry paths are resolved against it, never against the cwd. */
export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Node target of every bundle: the receiver's instance runs Node 24, the Lambdas the nodejs24.x runtime. */
export const BUNDLE_TARGET = 'node24';

export interface BundleOptions {
  /** Entry file, relative to the repository root or absolute. */
  readonly entry: string;
  /** File name of the bundle inside the output directory, e.g. 'index.mjs'. */
  readonly outFileName: string;
}

export interface Bundle {
  /** Directory holding exactly one file, `outFileName`. */
  readonly directory: string;
  /** Absolute path of the bundle file. */
  readonly file: string;
  /** Removes the temporary directory (idempotent). */
  dispose(): void;
}

/**
 * ESM bundles of CommonJS dependencies call `require` for Node built-ins; give them one.
 * The name is private so it cannot collide with bundled code.
 */
const REQUIRE_SHIM =
  "import { createRequire as __blackcloudCreateRequire } from 'node:module';\n" +
  'const require = __blackcloudCreateRequire(import.meta.url);';

export function bundleEntry(options: BundleOptions): Bundle {
  const entry = isAbsolute(options.entry) ? options.entry : resolve(REPO_ROOT, options.entry);
  if (!existsSync(entry)) {
    throw new BundlingError(
      options.entry,
      `the file ${entry} does not exist; fix: create it, or point the matching 'code' prop at the right file`,
    );
  }
  const directory = mkdtempSync(join(tmpdir(), 'blackcloud-bundle-'));
  const file = join(directory, options.outFileName);
  const dispose = (): void => rmSync(directory, { recursive: true, force: true });
  try {
    buildSync({
      entryPoints: [entry],
      outfile: file,
      bundle: true,
      platform: 'node',
      target: BUNDLE_TARGET,
      format: 'esm',
      mainFields: ['module', 'main'],
      banner: { js: REQUIRE_SHIM },
      legalComments: 'none',
      minifySyntax: true,
      minifyWhitespace: true,
      sourcemap: false,
      logLevel: 'silent',
      absWorkingDir: REPO_ROOT,
    });
  } catch (error) {
    dispose();
    const detail = error instanceof Error ? error.message.split('\n').slice(0, 6).join(' | ') : String(error);
    throw new BundlingError(options.entry, `esbuild failed: ${detail}`, { cause: error });
  }
  return { directory, file, dispose };
}
