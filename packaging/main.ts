/**
 * `npm run pack` (and `npm run build`): builds the packages of packaging/packages.ts into `--out DIR` (default
 * dist/packages, ignored by git) and, unless `--no-pack`, packs each into a tarball there. Prints one line per
 * package: tarball, size, runtime dependencies. Install commands: docs/install.md.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { buildPackages, packPackages } from './build-packages.ts';

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: 'dist/packages' },
    'no-pack': { type: 'boolean', default: false },
  },
});
const root = resolve(import.meta.dirname, '..');
const outDir = resolve(values.out);
try {
  const built = await buildPackages(root, outDir);
  if (values['no-pack']) {
    for (const item of built) console.log(`${item.name}@${item.version}  ${item.stageDir}`);
  } else {
    for (const item of await packPackages(built, outDir)) {
      const dependencies = Object.keys(item.dependencies).join(', ');
      console.log(`${item.tarball}  ${(item.size / 1024).toFixed(1)} kB  dependencies: ${dependencies}`);
    }
  }
} catch (error) {
  console.error(`blackcloud packaging: ${(error as Error).message}`);
  process.exitCode = 1;
}
