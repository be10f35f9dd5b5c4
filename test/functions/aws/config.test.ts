import { describe, expect, it } from 'vitest';
import { AwsConfigError } from '../../../functions/aws/errors.ts';
import {
  awsReceiverVars,
  formatAwsReceiverConfig,
  loadAwsReceiverConfig,
} from '../../../functions/aws/receiver-config.ts';
import { loadRevokerConfig } from '../../../functions/revoker/config.ts';
import { loadSweeperConfig } from '../../../functions/sweeper/config.ts';

const required = {
  BLACKCLOUD_NONCE_TABLE: 'blackcloud-nonces',
  BLACKCLOUD_DEVICES_TABLE: 'blackcloud-devices',
  BLACKCLOUD_GRANTS_TABLE: 'blackcloud-grants',
  BLACKCLOUD_BROKER_SECURITY_GROUP_IDS: 'sg-0123456789abcdef0, sg-0fedcba9876543210,sg-0123456789abcdef0',
  BLACKCLOUD_REVOKE_QUEUE_URL: 'https://sqs.eu-west-1.amazonaws.com/123456789012/blackcloud-revoke',
  BLACKCLOUD_FLEET_THING_GROUP: 'blackcloud-fleet',
  AWS_REGION: 'eu-west-1',
};

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(AwsConfigError);
    return (error as Error).message;
  }
  throw new Error('expected an AwsConfigError');
}

describe('AWS receiver config', () => {
  it('reads the required variables and fills in the defaults', () => {
    const config = loadAwsReceiverConfig(required);
    expect(config).toEqual({
      spaPort: 62_201,
      brokerPort: 8883,
      nonceTable: 'blackcloud-nonces',
      devicesTable: 'blackcloud-devices',
      grantsTable: 'blackcloud-grants',
      brokerSecurityGroupIds: ['sg-0123456789abcdef0', 'sg-0fedcba9876543210'],
      revokeQueueUrl: 'https://sqs.eu-west-1.amazonaws.com/123456789012/blackcloud-revoke',
      fleetThingGroup: 'blackcloud-fleet',
      grantSeconds: 30,
      clockWindowSeconds: 60,
      rulesPerGroup: 60,
      maxAddressesPerDevice: 4,
      coalesceMs: 20,
      ec2Attempts: 8,
      directoryRefreshSeconds: 30,
      healthPort: undefined,
      receivers: 1,
      shutdown: 'revoke',
      closeOnConnect: 'on',
      region: 'eu-west-1',
      endpoint: undefined,
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('takes explicit values', () => {
    const config = loadAwsReceiverConfig({
      ...required,
      BLACKCLOUD_SPA_PORT: '5000',
      BLACKCLOUD_BROKER_PORT: '8884',
      BLACKCLOUD_GRANT_SECONDS: '45',
      BLACKCLOUD_CLOCK_WINDOW_SECONDS: '120',
      BLACKCLOUD_AWS_ENDPOINT: 'http://127.0.0.1:5555',
    });
    expect([
      config.spaPort,
      config.brokerPort,
      config.grantSeconds,
      config.clockWindowSeconds,
      config.endpoint,
    ]).toEqual([5000, 8884, 45, 120, 'http://127.0.0.1:5555']);
  });

  it('reports every problem at once, naming the variable, the value and the fix', () => {
    const message = configError(() =>
      loadAwsReceiverConfig({
        ...required,
        BLACKCLOUD_NONCE_TABLE: undefined,
        BLACKCLOUD_SPA_PORT: '70000',
        BLACKCLOUD_BROKER_SECURITY_GROUP_IDS: 'sg-123,launch-wizard',
        BLACKCLOUD_GRANT_SECONDS: 'thirty',
      }),
    );
    expect(message).toContain('BLACKCLOUD_NONCE_TABLE is not set: expected a DynamoDB table name');
    expect(message).toContain("Fix: set it to the nonce table's name");
    expect(message).toContain(
      'BLACKCLOUD_SPA_PORT="70000" is invalid: expected a UDP port 1..65535 (default 62201)',
    );
    expect(message).toContain('BLACKCLOUD_BROKER_SECURITY_GROUP_IDS="sg-123,launch-wizard" is invalid');
    expect(message).toContain(
      'BLACKCLOUD_GRANT_SECONDS="thirty" is invalid: expected an integer number of seconds 1..900',
    );
    expect(message.split('\n  - ')).toHaveLength(5);
  });

  it('treats an empty value as unset', () => {
    expect(loadAwsReceiverConfig({ ...required, BLACKCLOUD_SPA_PORT: '' }).spaPort).toBe(62_201);
    expect(configError(() => loadAwsReceiverConfig({ ...required, AWS_REGION: ' ' }))).toContain(
      'AWS_REGION is not set',
    );
  });

  it('validates the device index refresh period (5..3600 s)', () => {
    expect(
      loadAwsReceiverConfig({ ...required, BLACKCLOUD_DIRECTORY_REFRESH_SECONDS: '60' })
        .directoryRefreshSeconds,
    ).toBe(60);
    for (const bad of ['4', '3601', '1.5', 'soon']) {
      expect(
        configError(() => loadAwsReceiverConfig({ ...required, BLACKCLOUD_DIRECTORY_REFRESH_SECONDS: bad })),
      ).toContain(`BLACKCLOUD_DIRECTORY_REFRESH_SECONDS=${JSON.stringify(bad)}`);
    }
  });

  it('prints the configuration as understood, one NAME=value line each', () => {
    const text = formatAwsReceiverConfig(loadAwsReceiverConfig(required));
    expect(text).toContain('BLACKCLOUD_BROKER_SECURITY_GROUP_IDS=sg-0123456789abcdef0,sg-0fedcba9876543210');
    expect(text).toContain('BLACKCLOUD_SPA_PORT=62201');
    expect(text).toContain('BLACKCLOUD_AWS_ENDPOINT=(unset)');
    // The plain listener is off unless the stack sets its port.
    expect(text).toContain('BLACKCLOUD_PLAIN_BROKER_PORT=(unset)');
    expect(loadAwsReceiverConfig({ ...required, BLACKCLOUD_PLAIN_BROKER_PORT: '1883' }).plainBrokerPort).toBe(
      1883,
    );
    // One line per variable the receiver reads, each named.
    const names = Object.values(awsReceiverVars).map((variable) => variable.name);
    expect(text.split('\n').map((line) => line.split('=')[0])).toEqual(names);
    expect(names).toHaveLength(23);
    expect(text).toContain('BLACKCLOUD_CLOSE_ON_CONNECT=on');
    expect(text).toContain('BLACKCLOUD_RECEIVERS=1');
    expect(text).toContain('BLACKCLOUD_CLOSE_WINDOW_MS=(unset)');
    expect(loadAwsReceiverConfig({ ...required, BLACKCLOUD_CLOSE_WINDOW_MS: '1500' }).closeWindowMs).toBe(
      1500,
    );
    expect(loadAwsReceiverConfig({ ...required, BLACKCLOUD_RECEIVERS: '3' }).receivers).toBe(3);
    expect(() => loadAwsReceiverConfig({ ...required, BLACKCLOUD_RECEIVERS: '21' })).toThrow(
      /BLACKCLOUD_RECEIVERS.*an integer 1\.\.20/s,
    );
    expect(loadAwsReceiverConfig({ ...required, BLACKCLOUD_CLOSE_ON_CONNECT: 'off' }).closeOnConnect).toBe(
      'off',
    );
    expect(
      configError(() => loadAwsReceiverConfig({ ...required, BLACKCLOUD_CLOSE_ON_CONNECT: 'yes' })),
    ).toContain('BLACKCLOUD_CLOSE_ON_CONNECT');
  });
});

describe('Lambda configs', () => {
  const lambdaEnv = {
    AWS_REGION: 'eu-west-1',
    BLACKCLOUD_BROKER_SECURITY_GROUP_IDS: 'sg-0123456789abcdef0',
    BLACKCLOUD_GRANTS_TABLE: 'blackcloud-grants',
  };

  it('revoker and sweeper read the groups, the grants table and the region', () => {
    for (const load of [loadRevokerConfig, loadSweeperConfig]) {
      expect(load(lambdaEnv)).toEqual({
        region: 'eu-west-1',
        endpoint: undefined,
        brokerSecurityGroupIds: ['sg-0123456789abcdef0'],
        grantsTable: 'blackcloud-grants',
      });
    }
  });

  it('names the missing variable', () => {
    expect(
      configError(() => loadSweeperConfig({ ...lambdaEnv, BLACKCLOUD_GRANTS_TABLE: undefined })),
    ).toContain(
      'blackcloud sweeper Lambda configuration is invalid:\n  - BLACKCLOUD_GRANTS_TABLE is not set',
    );
  });
});
