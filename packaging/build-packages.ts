/**
 * The one packaging scheme (docs/architecture.md, "The packages"): for each package of packaging/packages.ts, in
 * order, esbuild bundles its entries (ESM, Node 24, code splitting so a module shared by two entries exists once)
 * into `<out>/stage/<dir>/dist/`, and the staged manifest is the package's own `package.json` without `scripts`,
 * plus `dependencies` derived from the bundle's imports:
 *   - an npm package (bare specifier) stays external and is listed at the root package.json's version;
 *   - a relative import of a file another package exports (an entry) becomes that package's specifier
 *     (`@blackcloud/spa/bc1`), listed at that package's version;
 *   - any other file is bundled if it lies in the package's `sources`, else the build fails naming the file.
 * `packPackages` then runs `npm pack` on each staged folder. Nothing is written into the source tree.
 */
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { promisify } from 'node:util';
import { build, type Plugin } from 'esbuild';
import { PACKAGES, type PackageSpec } from './packages.ts';

export interface BuiltPackage {
  readonly name: string;
  readonly version: string;
  /** The staged folder (`package.json` + `dist/`), ready for `npm pack`. */
  readonly stageDir: string;
  /** Runtime dependencies of the packed manifest, sorted by name. */
  readonly dependencies: Readonly<Record<string, string>>;
  /** Exported source file (repository-relative) → the specifier dependents import it by. */
  readonly exports: ReadonlyMap<string, string>;
  /** Every repository file the bundle contains. */
  readonly bundled: ReadonlySet<string>;
}

export interface PackedPackage extends BuiltPackage {
  readonly tarball: string;
  /** Size of the .tgz in bytes, as `npm pack` reports it. */
  readonly size: number;
  readonly unpackedSize: number;
  readonly fileCount: number;
}

interface Manifest {
  name: string;
  version: string;
  scripts?: unknown;
  dependencies?: unknown;
  devDependencies?: unknown;
  [field: string]: unknown;
}

export class PackagingError extends Error {
  override readonly name = 'PackagingError';
}

const BUILTINS = new Set(builtinModules);

/** Builds every package of `specs` (dependency order) into `<outDir>/stage/`. */
export async function buildPackages(
  root: string,
  outDir: string,
  specs: readonly PackageSpec[] = PACKAGES,
): Promise<BuiltPackage[]> {
  const rootManifest = await readManifest(join(root, 'package.json'));
  const built: BuiltPackage[] = [];
  for (const spec of specs) built.push(await buildOne(root, outDir, spec, rootManifest, built));
  return built;
}

async function buildOne(
  root: string,
  outDir: string,
  spec: PackageSpec,
  rootManifest: Manifest,
  dependencies: readonly BuiltPackage[],
): Promise<BuiltPackage> {
  const manifest = await readManifest(join(root, spec.dir, 'package.json'));
  const entries = await resolveEntries(root, spec);
  const stageDir = join(outDir, 'stage', spec.dir);
  await rm(stageDir, { recursive: true, force: true });

  // A first pass finds the files `expose` turns into entries of their own.
  if (spec.expose !== undefined) {
    const first = await bundle(root, spec, entries, dependencies, undefined);
    for (const file of first.bundled) {
      if (file.startsWith(spec.expose.from)) {
        entries.set(`${spec.expose.as}${basename(file, '.ts')}`, file);
      }
    }
  }
  const { bundled, imported } = await bundle(root, spec, entries, dependencies, join(stageDir, 'dist'));

  const runtime: Record<string, string> = {};
  const npmDependencies = (rootManifest.dependencies ?? {}) as Record<string, string>;
  const devDependencies = (rootManifest.devDependencies ?? {}) as Record<string, string>;
  for (const name of [...imported].sort()) {
    const own = dependencies.find((candidate) => candidate.name === name);
    if (own !== undefined) runtime[name] = own.version;
    else if (npmDependencies[name] !== undefined) runtime[name] = npmDependencies[name];
    else {
      throw new PackagingError(
        `${manifest.name} imports ${name}, which the root package.json ${devDependencies[name] === undefined ? 'does not list' : 'lists as a devDependency'}; fix: add it to the root package.json "dependencies" (npm install ${name})`,
      );
    }
  }
  const { scripts: _scripts, devDependencies: _dev, dependencies: _deps, ...rest } = manifest;
  await writeFile(
    join(stageDir, 'package.json'),
    `${JSON.stringify({ ...rest, dependencies: runtime }, null, 2)}\n`,
  );

  const exported = new Map<string, string>();
  for (const [out, file] of entries) {
    exported.set(file, out === 'index' ? manifest.name : `${manifest.name}/${out}`);
  }
  return {
    name: manifest.name,
    version: manifest.version,
    stageDir,
    dependencies: runtime,
    exports: exported,
    bundled,
  };
}

/** One esbuild run; with `outdir` undefined nothing is written (the metafile is all that is wanted). */
async function bundle(
  root: string,
  spec: PackageSpec,
  entries: ReadonlyMap<string, string>,
  dependencies: readonly BuiltPackage[],
  outdir: string | undefined,
): Promise<{ bundled: Set<string>; imported: Set<string> }> {
  const imported = new Set<string>();
  const plugin: Plugin = {
    name: 'blackcloud-packages',
    setup(context) {
      context.onResolve({ filter: /.*/ }, (args) => {
        if (args.kind === 'entry-point') return undefined;
        const specifier = args.path;
        if (specifier.startsWith('node:') || BUILTINS.has(specifier))
          return { path: specifier, external: true };
        if (!specifier.startsWith('.') && !isAbsolute(specifier)) {
          imported.add(npmName(specifier));
          return { path: specifier, external: true };
        }
        const file = repoPath(root, resolve(args.resolveDir, specifier));
        const importer = repoPath(root, args.importer);
        for (const dependency of dependencies) {
          const target = dependency.exports.get(file);
          if (target !== undefined) {
            imported.add(dependency.name);
            return { path: target, external: true };
          }
          if (dependency.bundled.has(file)) {
            throw new PackagingError(
              `${importer} imports ${file}, which ${dependency.name} bundles but does not export; fix: import it through ${[...dependency.exports.keys()][0]} (its public entry)`,
            );
          }
        }
        if (!spec.sources.some((folder) => file.startsWith(folder))) {
          throw new PackagingError(
            `${importer} imports ${file}, outside the sources of ${spec.dir}/ (${spec.sources.join(', ')}) and exported by none of its dependencies (packaging/packages.ts)`,
          );
        }
        return undefined;
      });
    },
  };
  const result = await build({
    absWorkingDir: root,
    entryPoints: Object.fromEntries([...entries].map(([out, file]) => [out, join(root, file)])),
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node24',
    outdir: outdir ?? join(root, 'dist', 'unused'),
    write: outdir !== undefined,
    chunkNames: 'chunks/[name]-[hash]',
    metafile: true,
    logLevel: 'silent',
    banner: spec.executable === true ? { js: '#!/usr/bin/env node' } : {},
    plugins: [plugin],
  }).catch((error: unknown) => {
    // esbuild wraps a plugin's throw; surface the PackagingError's own message.
    const failure = error as { errors?: { text: string }[] };
    const text = failure.errors?.map((item) => item.text).join('; ');
    throw new PackagingError(`${spec.dir}: ${text ?? String(error)}`, { cause: error });
  });
  const bundled = new Set(Object.keys(result.metafile!.inputs).map((input) => input.split(sep).join('/')));
  return { bundled, imported };
}

async function resolveEntries(root: string, spec: PackageSpec): Promise<Map<string, string>> {
  const entries = new Map<string, string>();
  for (const [out, file] of Object.entries(spec.entries)) {
    if (out !== '*') {
      entries.set(out, file);
      continue;
    }
    for (const name of (await readdir(join(root, spec.dir))).sort()) {
      if (name.endsWith('.ts')) entries.set(basename(name, '.ts'), `${spec.dir}/${name}`);
    }
  }
  return entries;
}

/** `@scope/name/sub/path` → `@scope/name`; `name/sub` → `name`. */
export function npmName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

function repoPath(root: string, file: string): string {
  return relative(root, file).split(sep).join('/');
}

async function readManifest(file: string): Promise<Manifest> {
  const manifest = JSON.parse(await readFile(file, 'utf8')) as Manifest;
  if (typeof manifest.name !== 'string' || typeof manifest.version !== 'string') {
    throw new PackagingError(`${file}: "name" and "version" are required`);
  }
  return manifest;
}

const execFileAsync = promisify(execFile);

/** `npm pack` of each built package into `outDir`; the staged folders have no scripts, so nothing runs. */
export async function packPackages(built: readonly BuiltPackage[], outDir: string): Promise<PackedPackage[]> {
  await mkdir(outDir, { recursive: true });
  const packed: PackedPackage[] = [];
  for (const item of built) {
    const { stdout } = await execFileAsync(
      'npm',
      ['pack', item.stageDir, '--pack-destination', outDir, '--json', '--ignore-scripts'],
      { env: npmEnv(), timeout: 60_000 },
    );
    const [report] = JSON.parse(stdout) as {
      filename: string;
      size: number;
      unpackedSize: number;
      entryCount: number;
    }[];
    if (report === undefined) throw new PackagingError(`npm pack ${item.stageDir} reported nothing`);
    packed.push({
      ...item,
      tarball: join(outDir, report.filename),
      size: report.size,
      unpackedSize: report.unpackedSize,
      fileCount: report.entryCount,
    });
  }
  return packed;
}

/**
 * The environment for a child `npm`: this process's, without the `npm_*` variables an enclosing `npm run` sets
 * (they would redirect the child's prefix, workspace or lifecycle settings).
 */
export function npmEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.toLowerCase().startsWith('npm_')) env[key] = value;
  }
  return { ...env, ...extra };
}
