/**
 * Bench usage (bench/support/bench-usage.ts, bench/run.ts): `npm run bench -- NAME --help` prints the bench's doc
 * comment and runs nothing; an option the doc never names is refused before the bench starts; and every option a
 * bench reads is named in its doc, so the refusal never blocks a real flag. The dispatcher is run as a real process.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { FLEET_SIM_FLAGS } from '../../bench/fleet-sim.ts';
import {
  benchDoc,
  documentedFlags,
  inlineValues,
  undocumentedFlags,
  wantsHelp,
} from '../../bench/support/bench-usage.ts';

const BENCH_DIR = fileURLToPath(new URL('../../bench/', import.meta.url));
const RUN = `${BENCH_DIR}run.ts`;
const BENCHES = readdirSync(BENCH_DIR)
  .filter((file) => file.endsWith('.ts') && file !== 'run.ts')
  .map((file) => file.slice(0, -'.ts'.length));

/** The `--flags` a bench's code reads: numberOption(args, 'name', ...), '--name' literals, fleet-sim's own parser. */
function flagsRead(name: string, source: string): string[] {
  const read = new Set<string>();
  for (const m of source.matchAll(/numberOption\(\s*\w+,\s*'([a-z0-9-]+)'/g)) read.add(`--${m[1]}`);
  for (const m of source.matchAll(/'(--[a-z][a-z0-9-]*)'/g)) read.add(m[1]!);
  if (name === 'fleet-sim') for (const flag of FLEET_SIM_FLAGS) read.add(flag);
  read.delete('--help');
  return [...read].sort();
}

async function runBench(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [RUN, ...args], {
      timeout: 20_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

describe('bench usage, pure', () => {
  it('reads the leading doc comment without its markers, and the flags it names', () => {
    const doc = benchDoc(
      '/**\n * Measures X.\n * Run: `npm run bench -- x [--rate N] [--only limit]`.\n */\nconst a = 1;\n',
    );
    expect(doc).toBe('Measures X.\nRun: `npm run bench -- x [--rate N] [--only limit]`.');
    expect(documentedFlags(doc)).toEqual(['--only', '--rate']);
    expect(benchDoc('const a = 1; /** late */')).toBe('');
  });

  it('names the flags the doc does not, by name also in --name=value form; values are not flags', () => {
    expect(undocumentedFlags(['--rate', '5', '--rtae', '6', '--seconds=2', '-x'], ['--rate'])).toEqual([
      '--rtae',
      '--seconds',
    ]);
    expect(undocumentedFlags(['--rate', '5'], ['--rate'])).toEqual([]);
    expect(inlineValues(['--rate', '5', '--seconds=2', '--x=', '-y=1'])).toEqual(['--seconds=2', '--x=']);
    expect(wantsHelp(['--rate', '5', '-h'])).toBe(true);
    expect(wantsHelp(['--rate', '5'])).toBe(false);
  });
});

describe('every bench documents what it reads', () => {
  it.each(BENCHES)('%s: a doc comment with a Run line, naming every flag its code reads', (name) => {
    const source = readFileSync(`${BENCH_DIR}${name}.ts`, 'utf8');
    const doc = benchDoc(source);
    expect(doc).toMatch(new RegExp(`npm run bench -- ${name}\\b`));
    const documented = new Set(documentedFlags(doc));
    expect(flagsRead(name, source).filter((flag) => !documented.has(flag))).toEqual([]);
  });
});

describe('bench/run.ts, as a process', () => {
  it('NAME --help prints the usage and runs nothing (exit 0)', async () => {
    const result = await runBench(['broker-sessions', '--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Run: `npm run bench -- broker-sessions [--sessions N]');
    // The usage and nothing else: the bench did not start (it would print its machine line and table).
    expect(result.stdout.trim()).toBe(benchDoc(readFileSync(`${BENCH_DIR}broker-sessions.ts`, 'utf8')));
    expect(result.stderr).toBe('');
  });

  it('refuses a mistyped option before the bench starts, naming it and the options there are (exit 2)', async () => {
    const result = await runBench(['grant-storm', '--devcies', '5']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      'bench grant-storm: unknown option --devcies; its options: --deadline, --devices',
    );
    expect(result.stderr).toContain('(npm run bench -- grant-storm --help)');
    expect(result.stdout).toBe('');
  });

  it('refuses --name=value, which a bench would ignore, naming the form it reads (exit 2)', async () => {
    const result = await runBench(['grant-storm', '--devices=5']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('bench grant-storm: write --devices 5, not --devices=5');
    expect(result.stdout).toBe('');
  });

  it('with no name, lists the benches and how to ask one for help', async () => {
    const result = await runBench([]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('npm run bench -- NAME --help');
    for (const name of BENCHES) expect(result.stdout).toContain(`  ${name}\n`);
  });
});
