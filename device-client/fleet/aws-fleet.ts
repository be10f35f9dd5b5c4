/** Placeholder replaced by the AWS fleet. */
import type { Fleet } from './fleet.ts';
import { FleetError } from './fleet.ts';
import type { FleetFlags } from './open-fleet.ts';

export async function openAwsFleet(_flags: FleetFlags): Promise<Fleet> {
  throw new FleetError('the AWS fleet is not available yet');
}
