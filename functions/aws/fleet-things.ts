/**
 * The names of the things in the fleet thing group (direct members), every page of ListThingsInThingGroup read
 * through the SDK's paginator (`pageSize` names per request when given; AWS allows up to 250). Used by the
 * receiver's directory, the AWS key store and the operator CLI. AWS failures reject.
 */
import { type IoTClient, paginateListThingsInThingGroup } from '@aws-sdk/client-iot';

export async function listFleetThings(
  iot: IoTClient,
  fleetThingGroup: string,
  pageSize?: number,
): Promise<string[]> {
  const names: string[] = [];
  for await (const page of paginateListThingsInThingGroup(
    { client: iot, ...(pageSize === undefined ? {} : { pageSize }) },
    { thingGroupName: fleetThingGroup },
  )) {
    names.push(...(page.things ?? []));
  }
  return names;
}
