/**
 * A bench's usage is its leading doc comment (the "Run:" line and what the figures mean): `npm run bench -- NAME
 * --help` prints it, and an option the comment never names is refused before the bench starts (bench/run.ts), so a
 * mistyped flag cannot silently run a long bench on its defaults. Pure: text in, text out.
 */

/** The first `/** ... *\/` block of a bench's source, without its comment markers; '' when there is none. */
export function benchDoc(source: string): string {
  const match = /^\s*\/\*\*([\s\S]*?)\*\//.exec(source);
  if (match === null) return '';
  return match[1]!
    .split('\n')
    .map((line) => line.replace(/^\s*\* ?/, '').trimEnd())
    .join('\n')
    .trim();
}

/** Every `--name` the doc names, sorted, without duplicates. */
export function documentedFlags(doc: string): string[] {
  return [...new Set(Array.from(doc.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g), (m) => `--${m[1]}`))].sort();
}

/** Whether argv asks for help (`--help` or `-h` anywhere). */
export function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}

/** The `--name` words of argv (a `--name=value` counts by its name) that the doc does not name. */
export function undocumentedFlags(argv: readonly string[], documented: readonly string[]): string[] {
  const known = new Set(documented);
  return argv
    .filter((word) => /^--[a-z]/i.test(word))
    .map((word) => word.split('=')[0]!)
    .filter((flag) => !known.has(flag));
}

/**
 * The `--name=value` words of argv: the benches read `--name value` only, so such a word would be ignored and the
 * bench would run on its default; the dispatcher refuses them instead.
 */
export function inlineValues(argv: readonly string[]): string[] {
  return argv.filter((word) => /^--[a-z][a-z0-9-]*=/i.test(word));
}
