/**
 * The npm packages this repository ships, in dependency order (docs/architecture.md, "The packages"). Each is a
 * folder with its own manifest (`<dir>/package.json`: name, version, exports or bin, files) and the one packaging
 * scheme of packaging/build-packages.ts: esbuild bundles the package's own source into `dist/*.js`, npm
 * dependencies and the other blackcloud packages stay external, and the packed manifest's `dependencies` are
 * derived from what the bundle imports (versions from the root package.json, so each version is written once).
 *
 * Contract: paths are relative to the repository root and use `/`; `sources` are the folders whose files the
 * package may bundle (a file outside them, not exported by a dependency, fails the build); `expose` turns every
 * file the bundle pulls from one folder into an entry of its own (`dist/<as><name>.js`), so the packages that
 * depend on this one import that module from it instead of bundling a second copy.
 */
export interface PackageSpec {
  /** The folder holding the package's manifest. */
  readonly dir: string;
  /** dist path without `.js` → source file. `'*'` as the only key: every `.ts` file directly in `dir`. */
  readonly entries: Readonly<Record<string, string>>;
  readonly sources: readonly string[];
  readonly expose?: { readonly from: string; readonly as: string };
  /** The entries are commands (`bin`): a `#!/usr/bin/env node` first line. */
  readonly executable?: boolean;
}

export const PACKAGES: readonly PackageSpec[] = [
  { dir: 'spa', entries: { '*': 'spa/*.ts' }, sources: ['spa/'] },
  {
    dir: 'device-client',
    entries: { index: 'device-client/index.ts' },
    sources: ['device-client/', 'functions/core/'],
    // The device-facing vocabulary (device file schema, topics, key messages, ...) is defined once in
    // functions/core/ and shipped in @blackcloud/device, which the CLI imports it from.
    expose: { from: 'functions/core/', as: 'core/' },
  },
  {
    dir: 'cli',
    // The reader threads' entry (functions/receiver/reader-workers.ts starts it by path) ships beside the command.
    entries: { blackcloud: 'cli/launch.ts', 'reader-worker': 'functions/receiver/reader-worker.ts' },
    sources: ['cli/', 'functions/'],
    executable: true,
  },
];
