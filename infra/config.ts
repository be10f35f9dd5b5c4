/**
 * The black cloud's settings: the documented props of `BlackcloudStack`, their defaults, and their validation.
 * `resolveConfig` is pure: it checks every prop once, at the edge, and returns a frozen, fully defaulted object
 * (STYLE item 9); any prop out of range throws `InvalidPropError` naming the prop, the value and the fix, so a bad
 * prop fails `cdk synth` before anything is deployed. No environment or context lookups happen here.
 */
import { isIPv4, isIPv6 } from 'node:net';
import {
  DEFAULT_BROKER_PORT,
  DEFAULT_CLOCK_WINDOW_MS,
  DEFAULT_CONTROLLER_IDENTITY,
  DEFAULT_GRANT_SECONDS,
  DEFAULT_PLAIN_BROKER_PORT,
  DEFAULT_SPA_PORT,
  MAX_DEPLOYED_GRANT_WINDOW_SECONDS,
  MAX_RECEIVERS,
} from '../functions/core/deployment.ts';
import { InvalidPropError } from './errors.ts';

export {
  DEFAULT_BROKER_PORT,
  DEFAULT_CONTROLLER_IDENTITY,
  DEFAULT_GRANT_SECONDS,
  DEFAULT_PLAIN_BROKER_PORT,
  DEFAULT_SPA_PORT,
  MAX_DEPLOYED_GRANT_WINDOW_SECONDS,
  MAX_RECEIVERS,
};

/** Where the three bundled programs come from, relative to the repository root (or absolute). */
export interface CodeEntries {
  /** The receiver daemon's entrypoint, bundled into one file for the instance. @default 'functions/aws/receiver-main.ts' */
  readonly receiverEntry?: string;
  /** The revoker Lambda's entrypoint (exports `handler`). @default 'functions/revoker/handler.ts' */
  readonly revokerEntry?: string;
  /** The sweeper Lambda's entrypoint (exports `handler`). @default 'functions/sweeper/handler.ts' */
  readonly sweeperEntry?: string;
}

/** Settings of the black cloud. Every prop is optional; the defaults give the stack of docs/deploy.md. */
export interface BlackcloudProps {
  /** UDP port on which the receiver takes SPA knocks. Nothing ever answers on it. @default 62201 */
  readonly spaPort?: number;
  /** TCP port of the broker's MQTT-over-TLS listener (the port knocks open). @default 8883 */
  readonly brokerPort?: number;
  /**
   * The plain profile (docs/threat-model.md "The plain profile", docs/deploy.md): the broker also runs a plain MQTT
   * listener on `plainBrokerPort` for devices that cannot do TLS, dark like the TLS one (a knock of a plain device
   * opens it for that address only) and checked by the dynamic-security plugin against the knock's one-time
   * credential. Off by default: no plain listener, no plain grants. @default false
   */
  readonly plainListener?: boolean;
  /** TCP port of the plain listener; only with `plainListener: true`, and not the TLS port. @default 1883 */
  readonly plainBrokerPort?: number;
  /**
   * How long one knock opens the broker for the device's address, in seconds (the grant window). Also the
   * revoke queue's delivery delay, so at most 900 (the SQS maximum). @default 30
   */
  readonly grantSeconds?: number;
  /** [BC1-6] accepted clock difference between device and receiver, in seconds. @default 60 */
  readonly clockWindowSeconds?: number;
  /** Source CIDRs (IPv4 or IPv6) allowed to send knocks to the SPA port. @default ['0.0.0.0/0', '::/0'] */
  readonly spaSourceCidrs?: readonly string[];
  /** Instance type of the receiver; must be Graviton (arm64), e.g. 't4g.nano'. @default 't4g.nano' */
  readonly receiverInstanceType?: string;
  /** Instance type of the broker; must be Graviton (arm64). @default 't4g.micro' */
  readonly brokerInstanceType?: string;
  /**
   * Number of receivers. 1: one instance with its own Elastic IP. Above 1: an Auto Scaling group of that many
   * receivers behind a UDP Network Load Balancer (client address preserved, cross-zone, one Elastic IP per
   * subnet as the SPA address), health-checked over TCP from inside the VPC only, replaced one at a time with
   * the rest in service (docs/scaling.md). At most 20. @default 1
   */
  readonly receivers?: number;
  /**
   * TCP port of the receivers' health check (only with `receivers` > 1): answered to the VPC's own range only,
   * never to the internet. Must differ from `spaPort`. @default 62202
   */
  readonly receiverHealthPort?: number;
  /** How often the receiver (as controller) rotates each device's SPA key, in hours. @default 24 */
  readonly keyRotationHours?: number;
  /** Retention of the audit log group, in days (one of CloudWatch Logs' allowed values). @default 365 */
  readonly logRetentionDays?: number;
  /**
   * How many security groups on the broker carry knock rules (each holds at most `rulesPerSecurityGroup` inbound
   * rules per IP family). At most `securityGroupsPerInterface`. @default 1
   */
  readonly grantSecurityGroupCount?: number;
  /**
   * The account's "Security groups per network interface" quota (AWS default 5, at most 16): the bound of
   * `grantSecurityGroupCount`. Raise it here only after raising the quota. @default 5
   */
  readonly securityGroupsPerInterface?: number;
  /**
   * The account's "Inbound or outbound rules per security group" quota (AWS default 60, per IP family). The
   * receiver fills each grant group up to it. Rules × groups per interface may not exceed 1000. @default 60
   */
  readonly rulesPerSecurityGroup?: number;
  /** Replays per 5 minutes that raise the replay-spike alarm. @default 10 */
  readonly replayAlarmThreshold?: number;
  /**
   * Name of the Secrets Manager secret holding the broker's TLS material (CA certificate, broker certificate
   * and key), created by the operator before deploy (docs/deploy.md). Only the broker can read it.
   * @default '<stackName>/broker-tls'
   */
  readonly brokerTlsSecretName?: string;
  /**
   * Name of the Secrets Manager secret holding the controller's client certificate and key (the receiver's
   * privileged broker session for key rotation). Only the receiver can read it.
   * @default '<stackName>/controller-tls'
   */
  readonly controllerTlsSecretName?: string;
  /** DNS name in the broker certificate; clients verify the broker against it (TLS server name). @default 'broker.blackcloud.internal' */
  readonly brokerTlsServerName?: string;
  /** Common name of the controller's client certificate (its MQTT username on the broker). @default 'blackcloud-controller' */
  readonly controllerIdentity?: string;
  /** Name of the AWS IoT thing group holding the fleet. @default '<stackName>-fleet' */
  readonly fleetThingGroupName?: string;
  /** Name of the AWS IoT thing type of the devices. @default '<stackName>-device' */
  readonly deviceThingTypeName?: string;
  /** E-mail address subscribed to the alarm topic. @default - no subscription (the topic ARN is an output) */
  readonly alarmEmail?: string;
  /**
   * Dual-stack VPC: instances get IPv6 addresses, so devices may knock and connect over IPv6 (the receiver must
   * then listen on '::'). @default false
   */
  readonly ipv6?: boolean;
  /** Lets operators open shell sessions on the receiver with SSM Session Manager (no inbound port). @default false */
  readonly sessionManager?: boolean;
  /** Keep the devices/keys table and the audit log group when the stack is destroyed. @default true */
  readonly retainData?: boolean;
  /** Entry files of the bundled programs. @default - the project's own entrypoints */
  readonly code?: CodeEntries;
}

/** The validated, fully defaulted settings. */
export interface BlackcloudConfig {
  readonly spaPort: number;
  readonly brokerPort: number;
  /** The plain listener's port; undefined when the plain listener is off (the default). */
  readonly plainBrokerPort: number | undefined;
  readonly grantSeconds: number;
  readonly clockWindowSeconds: number;
  readonly spaSourceCidrs: readonly string[];
  readonly receiverInstanceType: string;
  readonly brokerInstanceType: string;
  readonly receivers: number;
  readonly receiverHealthPort: number;
  readonly keyRotationHours: number;
  readonly logRetentionDays: number;
  readonly grantSecurityGroupCount: number;
  readonly securityGroupsPerInterface: number;
  readonly rulesPerSecurityGroup: number;
  readonly replayAlarmThreshold: number;
  readonly brokerTlsSecretName: string;
  readonly controllerTlsSecretName: string;
  readonly brokerTlsServerName: string;
  readonly controllerIdentity: string;
  readonly fleetThingGroupName: string;
  readonly deviceThingTypeName: string;
  readonly alarmEmail: string | undefined;
  readonly ipv6: boolean;
  readonly sessionManager: boolean;
  readonly retainData: boolean;
  readonly code: Required<CodeEntries>;
}

export const DEFAULT_CLOCK_WINDOW_SECONDS = DEFAULT_CLOCK_WINDOW_MS / 1000;
export const DEFAULT_SPA_SOURCE_CIDRS: readonly string[] = Object.freeze(['0.0.0.0/0', '::/0']);
export const DEFAULT_RECEIVER_INSTANCE_TYPE = 't4g.nano';
export const DEFAULT_BROKER_INSTANCE_TYPE = 't4g.micro';
export const DEFAULT_KEY_ROTATION_HOURS = 24;
export const DEFAULT_LOG_RETENTION_DAYS = 365;
export const DEFAULT_BROKER_TLS_SERVER_NAME = 'broker.blackcloud.internal';
export const DEFAULT_CODE: Required<CodeEntries> = Object.freeze({
  receiverEntry: 'functions/aws/receiver-main.ts',
  revokerEntry: 'functions/revoker/handler.ts',
  sweeperEntry: 'functions/sweeper/handler.ts',
});

/** Security groups per network interface, AWS default quota. */
export const MAX_SECURITY_GROUPS_PER_INTERFACE = 5;
/** Security groups per network interface, the highest value the quota can be raised to. */
export const SECURITY_GROUPS_PER_INTERFACE_LIMIT = 16;
/** Inbound rules per security group (per IP family), AWS default quota. */
export const DEFAULT_RULES_PER_SECURITY_GROUP = 60;
/** EC2: rules per group × groups per interface may not exceed this. */
export const MAX_RULES_PER_INTERFACE = 1000;
export const DEFAULT_RECEIVER_HEALTH_PORT = 62_202;
/** The values CloudWatch Logs accepts for RetentionInDays. */
export const LOG_RETENTION_DAYS: readonly number[] = Object.freeze([
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
]);

function integerIn(
  prop: string,
  value: number | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  const actual = value ?? fallback;
  if (!Number.isInteger(actual) || actual < min || actual > max) {
    throw new InvalidPropError(
      prop,
      actual,
      `must be an integer from ${min} to ${max}`,
      `set ${prop} within ${min}..${max} or leave it out for the default ${fallback}`,
    );
  }
  return actual;
}

/** Graviton families: a generation digit followed by 'g' (t4g, m7g, c7gn, r8g, m6gd ...). */
const GRAVITON_INSTANCE_TYPE = /^[a-z]+[0-9]+g[a-z]*(?:-flex)?\.[a-z0-9]+$/;

function gravitonInstanceType(prop: string, value: string | undefined, fallback: string): string {
  const actual = value ?? fallback;
  if (typeof actual !== 'string' || !GRAVITON_INSTANCE_TYPE.test(actual)) {
    throw new InvalidPropError(
      prop,
      actual,
      'must be a Graviton (arm64) instance type such as t4g.nano, t4g.small or c7g.medium',
      `the images are arm64: choose a type whose family ends in 'g' (default ${fallback})`,
    );
  }
  return actual;
}

/** True when `text` is an IPv4 or IPv6 CIDR with a prefix length valid for its family. */
export function isCidr(text: string): boolean {
  const slash = text.indexOf('/');
  if (slash <= 0 || slash !== text.lastIndexOf('/')) return false;
  const address = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(prefixText)) return false;
  const prefix = Number(prefixText);
  if (isIPv4(address)) return prefix <= 32;
  if (isIPv6(address)) return prefix <= 128;
  return false;
}

function cidrList(prop: string, value: readonly string[] | undefined): readonly string[] {
  const actual = value ?? DEFAULT_SPA_SOURCE_CIDRS;
  if (!Array.isArray(actual) || actual.length === 0) {
    throw new InvalidPropError(
      prop,
      actual,
      'must be a non-empty list of CIDRs',
      "list the source networks allowed to knock, e.g. ['203.0.113.0/24'], or leave it out for anywhere",
    );
  }
  const seen = new Set<string>();
  actual.forEach((cidr, index) => {
    if (typeof cidr !== 'string' || !isCidr(cidr)) {
      throw new InvalidPropError(
        `${prop}[${index}]`,
        cidr,
        'must be an IPv4 or IPv6 CIDR such as 198.51.100.0/24 or 2001:db8::/32',
        'write the address and the prefix length separated by a slash',
      );
    }
    if (seen.has(cidr)) {
      throw new InvalidPropError(`${prop}[${index}]`, cidr, 'is listed twice', 'remove the duplicate');
    }
    seen.add(cidr);
  });
  return Object.freeze([...actual]);
}

/** Secrets Manager names: 1..512 of letters, digits and /_+=.@- . */
const SECRET_NAME = /^[A-Za-z0-9/_+=.@-]{1,512}$/;

function secretName(prop: string, value: string | undefined, fallback: string): string {
  const actual = value ?? fallback;
  if (typeof actual !== 'string' || !SECRET_NAME.test(actual)) {
    throw new InvalidPropError(
      prop,
      actual,
      'must be a Secrets Manager secret name (letters, digits and /_+=.@-, at most 512)',
      'use the name you gave `aws secretsmanager create-secret --name`',
    );
  }
  return actual;
}

/** IoT thing group and thing type names: 1..128 of letters, digits and :_- . */
const IOT_NAME = /^[a-zA-Z0-9:_-]{1,128}$/;

function iotName(prop: string, value: string | undefined, fallback: string): string {
  const actual = value ?? fallback;
  if (typeof actual !== 'string' || !IOT_NAME.test(actual)) {
    throw new InvalidPropError(
      prop,
      actual,
      'must match [a-zA-Z0-9:_-]{1,128}',
      'choose a name of that form',
    );
  }
  return actual;
}

const DNS_NAME = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$/;

function dnsName(prop: string, value: string | undefined, fallback: string): string {
  const actual = value ?? fallback;
  if (typeof actual !== 'string' || !DNS_NAME.test(actual)) {
    throw new InvalidPropError(
      prop,
      actual,
      'must be a lower-case DNS name with at least two labels',
      `use the DNS name written in the broker certificate (default ${fallback})`,
    );
  }
  return actual;
}

const IDENTITY = /^[A-Za-z0-9._-]{1,64}$/;

function booleanProp(prop: string, value: boolean | undefined, fallback: boolean): boolean {
  const actual = value ?? fallback;
  if (typeof actual !== 'boolean') {
    throw new InvalidPropError(
      prop,
      actual,
      'must be true or false',
      `leave it out for the default ${fallback}`,
    );
  }
  return actual;
}

function entryPath(prop: string, value: string | undefined, fallback: string): string {
  const actual = value ?? fallback;
  if (typeof actual !== 'string' || actual.length === 0) {
    throw new InvalidPropError(
      prop,
      actual,
      'must be a path to a .ts or .js file',
      `leave it out for ${fallback}`,
    );
  }
  return actual;
}

/** The plain listener's port when `plainListener` is on; undefined otherwise (and `plainBrokerPort` alone fails). */
function plainPort(props: BlackcloudProps, brokerPort: number): number | undefined {
  const on = booleanProp('plainListener', props.plainListener, false);
  if (!on) {
    if (props.plainBrokerPort !== undefined) {
      throw new InvalidPropError(
        'plainBrokerPort',
        props.plainBrokerPort,
        'is set but plainListener is off',
        'add plainListener: true to run the plain listener, or remove plainBrokerPort',
      );
    }
    return undefined;
  }
  const port = integerIn('plainBrokerPort', props.plainBrokerPort, DEFAULT_PLAIN_BROKER_PORT, 1, 65_535);
  if (port === brokerPort) {
    throw new InvalidPropError(
      'plainBrokerPort',
      port,
      `must differ from brokerPort (${brokerPort}, the TLS listener)`,
      `choose another port, or leave it out for the default ${DEFAULT_PLAIN_BROKER_PORT}`,
    );
  }
  return port;
}

/**
 * Validates `props` and fills in the defaults. `stackName` names the defaults that must be unique per stack.
 * Throws `InvalidPropError` on the first prop out of range.
 */
export function resolveConfig(props: BlackcloudProps, stackName: string): BlackcloudConfig {
  const spaPort = integerIn('spaPort', props.spaPort, DEFAULT_SPA_PORT, 1, 65_535);
  const brokerPort = integerIn('brokerPort', props.brokerPort, DEFAULT_BROKER_PORT, 1, 65_535);
  const plainBrokerPort = plainPort(props, brokerPort);
  const receivers = integerIn('receivers', props.receivers, 1, 1, MAX_RECEIVERS);
  const receiverHealthPort = integerIn(
    'receiverHealthPort',
    props.receiverHealthPort,
    DEFAULT_RECEIVER_HEALTH_PORT,
    1,
    65_535,
  );
  if (receiverHealthPort === spaPort) {
    throw new InvalidPropError(
      'receiverHealthPort',
      receiverHealthPort,
      'must differ from spaPort (the health check is TCP, the SPA port is UDP and never answers)',
      'choose another port, or leave it out for the default',
    );
  }
  const securityGroupsPerInterface = integerIn(
    'securityGroupsPerInterface',
    props.securityGroupsPerInterface,
    MAX_SECURITY_GROUPS_PER_INTERFACE,
    1,
    SECURITY_GROUPS_PER_INTERFACE_LIMIT,
  );
  const grantSecurityGroupCount = integerIn(
    'grantSecurityGroupCount',
    props.grantSecurityGroupCount,
    1,
    1,
    securityGroupsPerInterface,
  );
  const rulesPerSecurityGroup = integerIn(
    'rulesPerSecurityGroup',
    props.rulesPerSecurityGroup,
    DEFAULT_RULES_PER_SECURITY_GROUP,
    1,
    MAX_RULES_PER_INTERFACE,
  );
  if (rulesPerSecurityGroup * securityGroupsPerInterface > MAX_RULES_PER_INTERFACE) {
    throw new InvalidPropError(
      'rulesPerSecurityGroup',
      rulesPerSecurityGroup,
      `times securityGroupsPerInterface (${securityGroupsPerInterface}) must be at most ` +
        `${MAX_RULES_PER_INTERFACE} (EC2's limit per network interface)`,
      'lower one of the two quotas to match what AWS granted the account',
    );
  }
  const logRetentionDays = props.logRetentionDays ?? DEFAULT_LOG_RETENTION_DAYS;
  if (!LOG_RETENTION_DAYS.includes(logRetentionDays)) {
    throw new InvalidPropError(
      'logRetentionDays',
      logRetentionDays,
      `must be one of CloudWatch Logs' retention values (${LOG_RETENTION_DAYS.join(', ')})`,
      'pick the nearest allowed value',
    );
  }
  const alarmEmail = props.alarmEmail;
  if (
    alarmEmail !== undefined &&
    (typeof alarmEmail !== 'string' || !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(alarmEmail))
  ) {
    throw new InvalidPropError(
      'alarmEmail',
      alarmEmail,
      'must be an e-mail address',
      'write it as name@example.org',
    );
  }
  const controllerIdentity = props.controllerIdentity ?? DEFAULT_CONTROLLER_IDENTITY;
  if (typeof controllerIdentity !== 'string' || !IDENTITY.test(controllerIdentity)) {
    throw new InvalidPropError(
      'controllerIdentity',
      controllerIdentity,
      'must be 1..64 letters, digits, dots, dashes or underscores',
      'use the common name of the controller certificate',
    );
  }
  const config: BlackcloudConfig = {
    spaPort,
    brokerPort,
    plainBrokerPort,
    grantSeconds: integerIn(
      'grantSeconds',
      props.grantSeconds,
      DEFAULT_GRANT_SECONDS,
      1,
      MAX_DEPLOYED_GRANT_WINDOW_SECONDS,
    ),
    clockWindowSeconds: integerIn(
      'clockWindowSeconds',
      props.clockWindowSeconds,
      DEFAULT_CLOCK_WINDOW_SECONDS,
      1,
      3600,
    ),
    spaSourceCidrs: cidrList('spaSourceCidrs', props.spaSourceCidrs),
    receiverInstanceType: gravitonInstanceType(
      'receiverInstanceType',
      props.receiverInstanceType,
      DEFAULT_RECEIVER_INSTANCE_TYPE,
    ),
    brokerInstanceType: gravitonInstanceType(
      'brokerInstanceType',
      props.brokerInstanceType,
      DEFAULT_BROKER_INSTANCE_TYPE,
    ),
    receivers,
    receiverHealthPort,
    keyRotationHours: integerIn(
      'keyRotationHours',
      props.keyRotationHours,
      DEFAULT_KEY_ROTATION_HOURS,
      1,
      8760,
    ),
    logRetentionDays,
    grantSecurityGroupCount,
    securityGroupsPerInterface,
    rulesPerSecurityGroup,
    replayAlarmThreshold: integerIn('replayAlarmThreshold', props.replayAlarmThreshold, 10, 1, 1_000_000),
    brokerTlsSecretName: secretName(
      'brokerTlsSecretName',
      props.brokerTlsSecretName,
      `${stackName}/broker-tls`,
    ),
    controllerTlsSecretName: secretName(
      'controllerTlsSecretName',
      props.controllerTlsSecretName,
      `${stackName}/controller-tls`,
    ),
    brokerTlsServerName: dnsName(
      'brokerTlsServerName',
      props.brokerTlsServerName,
      DEFAULT_BROKER_TLS_SERVER_NAME,
    ),
    controllerIdentity,
    fleetThingGroupName: iotName('fleetThingGroupName', props.fleetThingGroupName, `${stackName}-fleet`),
    deviceThingTypeName: iotName('deviceThingTypeName', props.deviceThingTypeName, `${stackName}-device`),
    alarmEmail,
    ipv6: booleanProp('ipv6', props.ipv6, false),
    sessionManager: booleanProp('sessionManager', props.sessionManager, false),
    retainData: booleanProp('retainData', props.retainData, true),
    code: Object.freeze({
      receiverEntry: entryPath('code.receiverEntry', props.code?.receiverEntry, DEFAULT_CODE.receiverEntry),
      revokerEntry: entryPath('code.revokerEntry', props.code?.revokerEntry, DEFAULT_CODE.revokerEntry),
      sweeperEntry: entryPath('code.sweeperEntry', props.code?.sweeperEntry, DEFAULT_CODE.sweeperEntry),
    }),
  };
  return Object.freeze(config);
}
