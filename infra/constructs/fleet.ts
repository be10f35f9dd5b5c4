/**
 * Fleet unit: the AWS IoT registry side of the device directory (docs/architecture.md). One thing type for blackcloud
 * devices and one thing group holding the fleet; each device is a thing in the group whose attributes carry its
 * identity, enabled flag and allowed ports (never key material: that lives in the devices table).
 * Main child: the thing group ('Resource').
 */
import { Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as iot from 'aws-cdk-lib/aws-iot';
import { Construct } from 'constructs';

export interface FleetProps {
  /** Name of the thing group holding the fleet. */
  readonly thingGroupName: string;
  /** Name of the thing type of the devices. */
  readonly thingTypeName: string;
}

export class Fleet extends Construct {
  readonly thingGroupName: string;
  readonly thingTypeName: string;
  readonly thingGroupArn: string;
  readonly thingType: iot.CfnThingType;
  readonly thingGroup: iot.CfnThingGroup;

  constructor(scope: Construct, id: string, props: FleetProps) {
    super(scope, id);
    this.thingGroupName = props.thingGroupName;
    this.thingTypeName = props.thingTypeName;
    this.thingType = new iot.CfnThingType(this, 'ThingType', {
      thingTypeName: props.thingTypeName,
      thingTypeProperties: {
        thingTypeDescription: 'A device of the blackcloud fleet: knocks with SPA, then speaks MQTT over TLS.',
        // Lets `aws iot list-things --attribute-name enabled` find disabled devices.
        searchableAttributes: ['enabled'],
      },
    });
    this.thingGroup = new iot.CfnThingGroup(this, 'Resource', {
      thingGroupName: props.thingGroupName,
      thingGroupProperties: {
        thingGroupDescription: 'Devices allowed to knock on the blackcloud receiver.',
      },
    });
    this.thingGroupArn = Stack.of(this).formatArn({
      service: 'iot',
      resource: 'thinggroup',
      resourceName: props.thingGroupName,
    });
  }

  /**
   * The receiver reads the registry: the fleet group and the things in it. Thing names are device ids chosen at
   * enrolment, so DescribeThing is scoped to `thing/*` of this account and Region (IoT has no per-group scoping
   * of things).
   */
  grantRegistryRead(grantee: iam.IGrantable): iam.Grant {
    const stack = Stack.of(this);
    const group = iam.Grant.addToPrincipal({
      grantee,
      actions: ['iot:ListThingsInThingGroup'],
      resourceArns: [this.thingGroupArn],
    });
    const things = iam.Grant.addToPrincipal({
      grantee,
      actions: ['iot:DescribeThing', 'iot:ListThingGroupsForThing'],
      resourceArns: [stack.formatArn({ service: 'iot', resource: 'thing', resourceName: '*' })],
    });
    return group.combine(things);
  }
}
