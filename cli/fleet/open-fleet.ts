/**
 * Chooses the fleet a command works on from its flags: the local data directory (default, `--data-dir DIR`) or
 * the deployed stack on AWS (`--aws`, or `--stack NAME` / `--region R`, which imply it). The AWS code (and the
 * SDK) is loaded only when asked for, so local commands start fast.
 */
import { systemClock, systemRandom } from '../../functions/core/system.ts';
import { UsageError } from '../usage-error.ts';
import type { Fleet } from './fleet.ts';
import { type FleetFlags, operatorName } from './fleet-flags.ts';
import { LocalFleet } from './local-fleet.ts';

export function wantsAws(flags: FleetFlags): boolean {
  return flags.aws === true || flags.stack !== undefined || flags.region !== undefined;
}

export async function openFleet(flags: FleetFlags): Promise<Fleet> {
  if (!wantsAws(flags)) {
    for (const [flag, value] of [
      ['--ca', flags.ca],
      ['--out', flags.out],
    ] as const) {
      if (value !== undefined) {
        throw new UsageError(flag, 'applies to the AWS fleet only; add --aws (or --stack NAME)');
      }
    }
    return LocalFleet.open({
      ...(flags.dataDir === undefined ? {} : { dataDir: flags.dataDir }),
      random: systemRandom,
      clock: systemClock,
      operator: operatorName(),
    });
  }
  if (flags.dataDir !== undefined) {
    throw new UsageError(
      '--data-dir',
      'applies to the local black cloud only; drop it, or drop --aws/--stack',
    );
  }
  const { openAwsFleet } = await import('./aws-fleet.ts');
  return openAwsFleet(flags);
}
