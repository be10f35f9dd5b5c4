/**
 * Bulk enrolment (`blackcloud devices add NAME... [--count N --prefix P]`) over any Fleet.
 *
 * Contract:
 * - `expandNames`: the names given, then `--count N` generated names `P1..PN` zero-padded to N's width
 *   (`sensor-001..sensor-100`); a name twice is a UsageError.
 * - `enrolAll` runs at most `concurrency` enrolments at a time. A device already 'present' is skipped (so a
 *   re-run after an interruption resumes where it stopped and creates every device exactly once); a 'partial'
 *   one is cleaned up and created by the fleet. After the first failure no new device is started; the ones in
 *   flight finish; the report lists created, skipped, failed and not started ids. It never throws for a device's
 *   failure (that is in the report); `onProgress` is called once per finished device.
 */
import { UsageError } from '../usage-error.ts';
import type { EnrolledDevice, EnrolRequest, Fleet } from './fleet.ts';

export const MAX_BULK_COUNT = 100_000;

export function expandNames(names: readonly string[], count?: number, prefix?: string): string[] {
  const all = [...names];
  if (count !== undefined) {
    if (!Number.isInteger(count) || count < 1 || count > MAX_BULK_COUNT) {
      throw new UsageError('--count', `must be an integer 1..${MAX_BULK_COUNT}; received ${String(count)}`);
    }
    if (prefix === undefined || prefix === '') {
      throw new UsageError('--prefix', 'is required with --count (e.g. --count 100 --prefix sensor-)');
    }
    const width = String(count).length;
    for (let i = 1; i <= count; i++) all.push(`${prefix}${String(i).padStart(width, '0')}`);
  } else if (prefix !== undefined) {
    throw new UsageError('--prefix', 'only makes sense with --count N (e.g. --count 100 --prefix sensor-)');
  }
  if (all.length === 0) {
    throw new UsageError('NAME', 'give at least one device name, or --count N --prefix P');
  }
  const seen = new Set<string>();
  for (const name of all) {
    if (seen.has(name)) throw new UsageError('NAME', `${JSON.stringify(name)} is given twice`);
    seen.add(name);
  }
  return all;
}

export type EnrolOutcome = 'created' | 'skipped' | 'failed';

export interface EnrolProgress {
  readonly deviceId: string;
  readonly outcome: EnrolOutcome;
  readonly done: number;
  readonly total: number;
}

export interface BulkReport {
  readonly created: readonly EnrolledDevice[];
  /** Already present: left as they were. */
  readonly skipped: readonly string[];
  readonly failed: readonly { readonly deviceId: string; readonly error: unknown }[];
  /** Not attempted because an earlier device failed. */
  readonly notStarted: readonly string[];
}

export interface EnrolAllOptions {
  readonly fleet: Fleet;
  readonly requests: readonly EnrolRequest[];
  /** @default 8 */
  readonly concurrency?: number;
  readonly onProgress?: (progress: EnrolProgress) => void;
}

export async function enrolAll(options: EnrolAllOptions): Promise<BulkReport> {
  const { fleet, requests } = options;
  const concurrency = Math.max(1, Math.min(options.concurrency ?? 8, requests.length));
  const created: EnrolledDevice[] = [];
  const skipped: string[] = [];
  const failed: { deviceId: string; error: unknown }[] = [];
  let next = 0;
  let done = 0;
  const finish = (deviceId: string, outcome: EnrolOutcome) => {
    done += 1;
    options.onProgress?.({ deviceId, outcome, done, total: requests.length });
  };
  const worker = async (): Promise<void> => {
    while (failed.length === 0 && next < requests.length) {
      const request = requests[next++]!;
      try {
        if ((await fleet.state(request.deviceId)) === 'present') {
          skipped.push(request.deviceId);
          finish(request.deviceId, 'skipped');
          continue;
        }
        created.push(await fleet.enrol(request));
        finish(request.deviceId, 'created');
      } catch (error) {
        failed.push({ deviceId: request.deviceId, error });
        finish(request.deviceId, 'failed');
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return {
    created,
    skipped,
    failed,
    notStarted: requests.slice(next).map((request) => request.deviceId),
  };
}

/**
 * A text progress bar for stderr: `[##########..........] 50/100 (created 48, skipped 2)`. Returns the lines to
 * print for this step: about every tenth of the run, and always the last step (logs stay short for 10 000
 * devices).
 */
export function progressReporter(width = 30): (progress: EnrolProgress) => string | undefined {
  const counts: Record<EnrolOutcome, number> = { created: 0, skipped: 0, failed: 0 };
  let lastShown = 0;
  return (progress) => {
    counts[progress.outcome] += 1;
    const step = Math.max(1, Math.ceil(progress.total / 10));
    if (progress.done < progress.total && progress.done - lastShown < step && progress.outcome !== 'failed') {
      return undefined;
    }
    lastShown = progress.done;
    const filled = Math.round((progress.done / progress.total) * width);
    const bar = `${'#'.repeat(filled)}${'.'.repeat(width - filled)}`;
    const parts = [`created ${counts.created}`, `skipped ${counts.skipped}`];
    if (counts.failed > 0) parts.push(`failed ${counts.failed}`);
    return `[${bar}] ${progress.done}/${progress.total} (${parts.join(', ')})`;
  };
}
