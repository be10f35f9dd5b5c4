/**
 * Bench dispatcher. `node bench/run.ts NAME` (`npm run bench -- NAME`) imports bench/NAME.ts and awaits its exported `main()`;
 * with no NAME (or an unknown one) it lists the available benches. `NAME --help` prints the bench's usage (its leading
 * doc comment) and runs nothing; an option that usage never names is refused, with the list of those it does name,
 * and so is `--name=value` (the benches read `--name value`) (bench/support/bench-usage.ts). Benches print
 * figures; they assert nothing about speed (tests never do: speed belongs here).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  benchDoc,
  documentedFlags,
  inlineValues,
  undocumentedFlags,
  wantsHelp,
} from './support/bench-usage.ts';

const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url));
const SELF = 'run';

function availableBenches(): string[] {
  return readdirSync(BENCH_DIR)
    .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
    .map((file) => file.slice(0, -'.ts'.length))
    .filter((name) => name !== SELF)
    .sort();
}

function usage(benches: readonly string[]): string {
  return [
    'usage: npm run bench -- NAME [OPTIONS]',
    '       npm run bench -- NAME --help   (what NAME measures and its options)',
    '',
    'available benches:',
    ...benches.map((name) => `  ${name}`),
  ].join('\n');
}

async function run(argv: readonly string[]): Promise<number> {
  const benches = availableBenches();
  const name = argv[0];
  if (name === undefined || name === '--help' || name === '-h') {
    console.log(usage(benches));
    return 0;
  }
  // Only names listed from the directory are imported: no paths, no traversal.
  if (!benches.includes(name)) {
    console.error(`unknown bench ${JSON.stringify(name)}\n\n${usage(benches)}`);
    return 2;
  }
  const doc = benchDoc(readFileSync(`${BENCH_DIR}${name}.ts`, 'utf8'));
  const options = argv.slice(1);
  if (wantsHelp(options)) {
    console.log(doc === '' ? `bench/${name}.ts has no usage comment` : doc);
    return 0;
  }
  const documented = documentedFlags(doc);
  const unknown = undocumentedFlags(options, documented);
  if (unknown.length > 0) {
    console.error(
      `bench ${name}: unknown option${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; ` +
        `its options: ${documented.length > 0 ? documented.join(', ') : '(none)'} ` +
        `(npm run bench -- ${name} --help)`,
    );
    return 2;
  }
  const inline = inlineValues(options);
  if (inline.length > 0) {
    const [flag, value] = inline[0]!.split(/=(.*)/s);
    console.error(
      `bench ${name}: write ${flag} ${value}, not ${inline[0]} (options take their value as the next word)`,
    );
    return 2;
  }
  const module: { main?: unknown } = await import(pathToFileURL(`${BENCH_DIR}${name}.ts`).href);
  if (typeof module.main !== 'function') {
    console.error(`bench/${name}.ts does not export a main() function`);
    return 2;
  }
  await module.main(options);
  return 0;
}

process.exitCode = await run(process.argv.slice(2));
