/**
 * Plain-text tables and number formats for the benches' output: left-aligned text columns, right-aligned numbers,
 * a dashed rule under the header. Pure (returns lines; the bench prints them).
 */

export type Cell = string | number;

/** Integers with thousands separators; other numbers with `digits` decimals. */
export function formatNumber(value: number, digits = 2): string {
  if (!Number.isFinite(value)) return String(value);
  return Number.isInteger(value) ? value.toLocaleString('en-US') : value.toFixed(digits);
}

export const thousands = (n: number): string => Math.round(n).toLocaleString('en-US');

export function formatTable(header: readonly string[], rows: readonly (readonly Cell[])[]): string[] {
  const text = rows.map((row) => row.map((cell) => (typeof cell === 'number' ? formatNumber(cell) : cell)));
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((row) => typeof row[i] === 'number'));
  const widths = header.map((h, i) => Math.max(h.length, ...text.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (numeric[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...text.map(line)];
}

export function printTable(header: readonly string[], rows: readonly (readonly Cell[])[]): void {
  for (const line of formatTable(header, rows)) console.log(line);
}

/** Value of `--name N` in argv, validated as a number in [min, max], or the default. */
export function numberOption(
  args: readonly string[],
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const at = args.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(args[at + 1]);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new RangeError(
      `--${name}: received ${String(args[at + 1])}; expected a number in [${min}, ${max}]`,
    );
  }
  return value;
}

/** The p-th percentile (0..100) of sorted values (nearest rank). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}
