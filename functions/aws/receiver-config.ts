/**
 * The AWS receiver's configuration, from the environment (the systemd unit's Environment= lines), validated once
 * at start into a frozen object. Errors name the variable, the value received, what is expected and the fix.
 * The infra stack sets exactly these names:
 *
 *   BLACKCLOUD_SPA_PORT                   UDP port the receiver listens on            default 62201
 *   BLACKCLOUD_BROKER_PORT                TCP port grants open on the broker           default 8883
 *   BLACKCLOUD_PLAIN_BROKER_PORT          the broker's plain listener (plain devices)  optional (none)
 *   BLACKCLOUD_NONCE_TABLE                DynamoDB nonce table                         required
 *   BLACKCLOUD_DEVICES_TABLE              DynamoDB devices/keys table                  required
 *   BLACKCLOUD_GRANTS_TABLE               DynamoDB grants table                        required
 *   BLACKCLOUD_BROKER_SECURITY_GROUP_IDS  broker security groups, comma-separated      required
 *   BLACKCLOUD_REVOKE_QUEUE_URL           SQS delay queue consumed by the revoker      required
 *   BLACKCLOUD_FLEET_THING_GROUP          AWS IoT thing group of the devices           required
 *   BLACKCLOUD_GRANT_SECONDS              grant length when a knock asks for 0 s       default 30
 *   BLACKCLOUD_CLOCK_WINDOW_SECONDS       accepted |now - packet timestamp|            default 60
 *   BLACKCLOUD_RULES_PER_GROUP            inbound rules per broker group and family    default 60
 *   BLACKCLOUD_MAX_ADDRESSES_PER_DEVICE   source addresses one device holds grants for default 4
 *   BLACKCLOUD_COALESCE_MS                rule changes gathered into one EC2 call, ms  default 20
 *   BLACKCLOUD_CLOSE_WINDOW_MS            the same for revokes (the closes lane), ms   default BLACKCLOUD_COALESCE_MS
 *   BLACKCLOUD_EC2_ATTEMPTS               attempts per EC2 call when throttled         default 8
 *   BLACKCLOUD_DIRECTORY_REFRESH_SECONDS  device index full refresh period, s          default 30
 *   BLACKCLOUD_HEALTH_PORT                TCP health-check port (behind the NLB)       optional (none)
 *   BLACKCLOUD_RECEIVERS                  receivers sharing the broker's rule slots    default 1
 *   BLACKCLOUD_SHUTDOWN                   revoke | handover (grants at shutdown)       default revoke
 *   BLACKCLOUD_CLOSE_ON_CONNECT           on | off (revoke a rule once the session is up) default on
 *   AWS_REGION                            Region of all the above                      required
 *   BLACKCLOUD_AWS_ENDPOINT               one endpoint for every service (moto/tests)  optional
 * Nothing here is secret (keys live in the devices table), so `formatAwsReceiverConfig` prints everything.
 */

import { z } from 'zod';
import {
  DEFAULT_BROKER_PORT,
  DEFAULT_CLOCK_WINDOW_MS,
  DEFAULT_GRANT_SECONDS,
  DEFAULT_MAX_ADDRESSES_PER_DEVICE,
  DEFAULT_SPA_PORT,
  MAX_ADDRESSES_PER_DEVICE,
  MAX_DEPLOYED_GRANT_WINDOW_SECONDS,
  MAX_RECEIVERS,
} from '../core/deployment.ts';
import { ENV, OPTIONAL_ENV, SCALED_RECEIVER_ENV } from '../core/environment.ts';
import {
  commonAwsVars,
  type Env,
  type EnvConfig,
  portSchema,
  readEnv,
  secondsSchema,
  tableNameSchema,
  thingGroupSchema,
  urlSchema,
} from './env-config.ts';

const table = (name: string, what: string) => ({
  name,
  schema: tableNameSchema,
  expected: 'a DynamoDB table name (3..255 of a-z A-Z 0-9 _ . -)',
  fix: `set it to the ${what} table's name (stack output)`,
});

export const awsReceiverVars = {
  spaPort: {
    name: ENV.spaPort,
    schema: portSchema,
    expected: 'a UDP port 1..65535',
    fix: 'set the port devices knock on, or unset it for the default',
    default: DEFAULT_SPA_PORT,
  },
  brokerPort: {
    name: ENV.brokerPort,
    schema: portSchema,
    expected: 'a TCP port 1..65535',
    fix: "set the broker's MQTT over TLS port, or unset it for the default",
    default: DEFAULT_BROKER_PORT,
  },
  plainBrokerPort: {
    name: OPTIONAL_ENV.plainBrokerPort,
    schema: portSchema,
    expected: 'a TCP port 1..65535',
    fix: "set the broker's plain MQTT port (the stack does when plainListener is on), or unset it for TLS only",
    optional: true,
  },
  nonceTable: table(ENV.nonceTable, 'nonce'),
  devicesTable: table(ENV.devicesTable, 'devices/keys'),
  grantsTable: commonAwsVars.grantsTable,
  brokerSecurityGroupIds: commonAwsVars.brokerSecurityGroupIds,
  revokeQueueUrl: {
    name: ENV.revokeQueueUrl,
    schema: urlSchema,
    expected: 'an SQS queue URL such as "https://sqs.eu-west-1.amazonaws.com/123456789012/blackcloud-revoke"',
    fix: "set it to the revoke delay queue's URL (stack output)",
  },
  fleetThingGroup: {
    name: ENV.fleetThingGroup,
    schema: thingGroupSchema,
    expected: 'an AWS IoT thing group name (1..128 of a-z A-Z 0-9 : _ -)',
    fix: "set it to the fleet thing group's name (stack output)",
  },
  grantSeconds: {
    name: ENV.grantSeconds,
    schema: secondsSchema(1, MAX_DEPLOYED_GRANT_WINDOW_SECONDS),
    expected: `an integer number of seconds 1..${MAX_DEPLOYED_GRANT_WINDOW_SECONDS}`,
    fix: 'set how long a grant lasts when the knock asks for 0 seconds, or unset it for the default',
    default: DEFAULT_GRANT_SECONDS,
  },
  clockWindowSeconds: {
    name: ENV.clockWindowSeconds,
    schema: secondsSchema(1, 3600),
    expected: 'an integer number of seconds 1..3600',
    fix: 'set the accepted clock difference between devices and the receiver, or unset it for the default',
    default: DEFAULT_CLOCK_WINDOW_MS / 1000,
  },
  rulesPerGroup: {
    name: OPTIONAL_ENV.rulesPerGroup,
    schema: secondsSchema(1, 1000),
    expected: 'an integer 1..1000 (the "Inbound or outbound rules per security group" quota)',
    fix: "set it to the account's raised quota, or unset it for EC2's default",
    default: 60,
  },
  maxAddressesPerDevice: {
    name: OPTIONAL_ENV.maxAddressesPerDevice,
    schema: secondsSchema(1, MAX_ADDRESSES_PER_DEVICE),
    expected: `an integer 1..${MAX_ADDRESSES_PER_DEVICE} (source addresses one device may hold grants for at once)`,
    fix: 'raise it for devices that knock from many addresses at once, or unset it for the default',
    default: DEFAULT_MAX_ADDRESSES_PER_DEVICE,
  },
  coalesceMs: {
    name: SCALED_RECEIVER_ENV.coalesceMs,
    schema: secondsSchema(1, 10_000),
    expected: 'an integer number of milliseconds 1..10000',
    fix: 'raise it when several receivers share the EC2 API budget (docs/scaling.md), or unset it for the default',
    default: 20,
  },
  closeWindowMs: {
    name: SCALED_RECEIVER_ENV.closeWindowMs,
    schema: secondsSchema(1, 10_000),
    expected: 'an integer number of milliseconds 1..10000',
    fix:
      'set how long revokes are gathered into one EC2 call (the stack sets it with several receivers, ' +
      'docs/scaling.md), or unset it to use BLACKCLOUD_COALESCE_MS',
    optional: true,
  },
  ec2Attempts: {
    name: 'BLACKCLOUD_EC2_ATTEMPTS',
    schema: secondsSchema(1, 50),
    expected: 'an integer 1..50 (attempts per EC2 call, with exponential backoff and jitter)',
    fix: 'raise it when several receivers share the EC2 API budget (docs/scaling.md), or unset it for the default',
    default: 8,
  },
  directoryRefreshSeconds: {
    name: 'BLACKCLOUD_DIRECTORY_REFRESH_SECONDS',
    schema: secondsSchema(5, 3600),
    expected: 'an integer number of seconds 5..3600',
    fix:
      'set how often the device index is reloaded (the bound from enrolment or disable to effect; each reload ' +
      'costs about one request per device, docs/operations-aws.md), or unset it for the default',
    default: 30,
  },
  healthPort: {
    name: SCALED_RECEIVER_ENV.healthPort,
    schema: portSchema,
    expected: 'a TCP port 1..65535',
    fix: "set the load balancer's health-check port (the stack does when receivers > 1), or unset it",
    optional: true,
  },
  receivers: {
    name: SCALED_RECEIVER_ENV.receivers,
    schema: secondsSchema(1, MAX_RECEIVERS),
    expected: `an integer 1..${MAX_RECEIVERS} (the receivers behind the load balancer)`,
    fix:
      "set it to the stack's receiver count (the stack does when receivers > 1): each receiver then fills its own " +
      'share of the rule slots (docs/scaling.md), or unset it for one receiver',
    default: 1,
  },
  shutdown: {
    name: SCALED_RECEIVER_ENV.shutdown,
    schema: z.enum(['revoke', 'handover']),
    expected:
      '"revoke" (close every grant this receiver opened) or "handover" (leave them to the revoke queue and sweeper)',
    fix: 'use handover behind a load balancer, so replacing a receiver never closes a grant a device still needs',
    default: 'revoke' as const,
  },
  closeOnConnect: {
    name: SCALED_RECEIVER_ENV.closeOnConnect,
    schema: z.enum(['on', 'off']),
    expected:
      '"on" (revoke a grant once the device\'s broker session is up) or "off" (grants live for their window)',
    fix: 'use off to keep every grant for its whole window (docs/scaling.md, "A rule lives until the session is established")',
    default: 'on' as const,
  },
  region: commonAwsVars.region,
  endpoint: commonAwsVars.endpoint,
} as const;

export type AwsReceiverConfig = EnvConfig<typeof awsReceiverVars>;

/** Read and validate; throws AwsConfigError listing every problem. */
export function loadAwsReceiverConfig(env: Env = process.env): AwsReceiverConfig {
  return readEnv(env, awsReceiverVars, 'blackcloud AWS receiver');
}

/** One `NAME=value` line per variable as understood (defaults filled in), for `--print-config`. No secrets exist. */
export function formatAwsReceiverConfig(config: AwsReceiverConfig): string {
  return Object.entries(awsReceiverVars)
    .map(([key, v]) => {
      const value = config[key as keyof AwsReceiverConfig];
      const text = Array.isArray(value) ? value.join(',') : value === undefined ? '(unset)' : String(value);
      return `${v.name}=${text}`;
    })
    .join('\n');
}
