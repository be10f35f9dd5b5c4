/**
 * Reads the app's settings from CDK context, pure: the `blackcloud` key is an object of `BlackcloudProps`
 * (in cdk.json) or the same object as a JSON string (from `cdk -c blackcloud='{...}'`); `blackcloud:stackName`
 * names the stack. Unknown keys fail, naming the key, so a typo never silently falls back to a default.
 * Values themselves are validated by `resolveConfig` when the stack is built.
 */
import type { BlackcloudProps } from './config.ts';
import { InvalidPropError } from './errors.ts';

/** Every key `BlackcloudProps` accepts. */
const KNOWN_KEYS: ReadonlySet<string> = new Set([
  'spaPort',
  'brokerPort',
  'plainListener',
  'plainBrokerPort',
  'grantSeconds',
  'clockWindowSeconds',
  'spaSourceCidrs',
  'receiverInstanceType',
  'brokerInstanceType',
  'receivers',
  'receiverHealthPort',
  'keyRotationHours',
  'logRetentionDays',
  'grantSecurityGroupCount',
  'securityGroupsPerInterface',
  'rulesPerSecurityGroup',
  'replayAlarmThreshold',
  'brokerTlsSecretName',
  'controllerTlsSecretName',
  'brokerTlsServerName',
  'controllerIdentity',
  'fleetThingGroupName',
  'deviceThingTypeName',
  'alarmEmail',
  'ipv6',
  'sessionManager',
  'retainData',
  'code',
] satisfies (keyof BlackcloudProps)[]);

export function settingsFromContext(value: unknown): BlackcloudProps {
  if (value === undefined || value === null) return {};
  let parsed: unknown = value;
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch (error) {
      throw new InvalidPropError(
        'context blackcloud',
        value,
        'must be a JSON object',
        `pass -c blackcloud='{"spaPort":62201}' with valid JSON`,
        { cause: error },
      );
    }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InvalidPropError(
      'context blackcloud',
      parsed,
      'must be an object',
      'give an object of stack props',
    );
  }
  for (const key of Object.keys(parsed)) {
    if (!KNOWN_KEYS.has(key)) {
      throw new InvalidPropError(
        `context blackcloud.${key}`,
        (parsed as Record<string, unknown>)[key],
        'is not a known setting',
        `use one of: ${[...KNOWN_KEYS].join(', ')}`,
      );
    }
  }
  return parsed as BlackcloudProps;
}

const STACK_NAME = /^[A-Za-z][A-Za-z0-9-]{0,127}$/;

export function stackNameFromContext(value: unknown, fallback: string): string {
  const name = value ?? fallback;
  if (typeof name !== 'string' || !STACK_NAME.test(name)) {
    throw new InvalidPropError(
      'context blackcloud:stackName',
      name,
      'must be a CloudFormation stack name (a letter, then letters, digits or hyphens, at most 128)',
      `choose a name such as ${fallback}`,
    );
  }
  return name;
}

/**
 * The `receivers` context key, a shortcut for the most common scale setting: `cdk synth -c receivers=3`
 * (the CLI passes a string) is the same as `-c blackcloud='{"receivers":3}'`. Undefined when not given; the
 * value is range-checked by `resolveConfig`. Giving both, with different values, fails naming both.
 */
export function withReceiversFromContext(props: BlackcloudProps, value: unknown): BlackcloudProps {
  if (value === undefined || value === null) return props;
  const text = typeof value === 'number' ? String(value) : value;
  if (typeof text !== 'string' || !/^[0-9]{1,3}$/.test(text.trim())) {
    throw new InvalidPropError(
      'context receivers',
      value,
      'must be a whole number of receivers',
      'pass -c receivers=3, or leave it out for one receiver',
    );
  }
  const receivers = Number(text.trim());
  if (props.receivers !== undefined && props.receivers !== receivers) {
    throw new InvalidPropError(
      'context receivers',
      receivers,
      `contradicts blackcloud.receivers (${String(props.receivers)})`,
      'set the number of receivers in one place only',
    );
  }
  return { ...props, receivers };
}
