/**
 * The stack's props: documented defaults, and every prop out of range fails synth with a message naming the prop,
 * the value and the fix (infra/config.ts, infra/context.ts). Pure: no synth except where a stack is built to
 * prove the error surfaces before any bundling or resource.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { describe, expect, it } from 'vitest';
import { BlackcloudStack } from '../../infra/blackcloud-stack.ts';
import { type BlackcloudProps, isCidr, resolveConfig } from '../../infra/config.ts';
import { settingsFromContext, stackNameFromContext } from '../../infra/context.ts';
import { InvalidPropError } from '../../infra/errors.ts';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

describe('resolveConfig defaults', () => {
  it('GIVEN no props WHEN resolved THEN every default is the documented one', () => {
    const config = resolveConfig({}, 'Blackcloud');
    expect(config).toMatchObject({
      spaPort: 62_201,
      brokerPort: 8883,
      plainBrokerPort: undefined,
      grantSeconds: 30,
      clockWindowSeconds: 60,
      spaSourceCidrs: ['0.0.0.0/0', '::/0'],
      receiverInstanceType: 't4g.nano',
      brokerInstanceType: 't4g.micro',
      receivers: 1,
      receiverHealthPort: 62_202,
      keyRotationHours: 24,
      logRetentionDays: 365,
      grantSecurityGroupCount: 1,
      securityGroupsPerInterface: 5,
      rulesPerSecurityGroup: 60,
      replayAlarmThreshold: 10,
      brokerTlsSecretName: 'Blackcloud/broker-tls',
      controllerTlsSecretName: 'Blackcloud/controller-tls',
      brokerTlsServerName: 'broker.blackcloud.internal',
      controllerIdentity: 'blackcloud-controller',
      fleetThingGroupName: 'Blackcloud-fleet',
      deviceThingTypeName: 'Blackcloud-device',
      alarmEmail: undefined,
      ipv6: false,
      sessionManager: false,
      retainData: true,
      code: {
        receiverEntry: 'functions/aws/receiver-main.ts',
        revokerEntry: 'functions/revoker/handler.ts',
        sweeperEntry: 'functions/sweeper/handler.ts',
      },
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('GIVEN valid non-default props WHEN resolved THEN they are kept', () => {
    const config = resolveConfig(
      {
        spaPort: 4000,
        grantSeconds: 900,
        spaSourceCidrs: ['203.0.113.0/24', '2001:db8::/32'],
        receiverInstanceType: 'c7gn.medium',
        brokerInstanceType: 'm6gd.large',
        grantSecurityGroupCount: 5,
        logRetentionDays: 30,
        alarmEmail: 'ops@example.org',
      },
      'Edge',
    );
    expect(config.spaPort).toBe(4000);
    expect(config.grantSeconds).toBe(900);
    expect(config.spaSourceCidrs).toEqual(['203.0.113.0/24', '2001:db8::/32']);
    expect(config.receiverInstanceType).toBe('c7gn.medium');
    expect(config.brokerInstanceType).toBe('m6gd.large');
    expect(config.grantSecurityGroupCount).toBe(5);
    expect(config.brokerTlsSecretName).toBe('Edge/broker-tls');
    expect(config.alarmEmail).toBe('ops@example.org');
  });

  it('GIVEN plainListener WHEN resolved THEN the plain port is 1883, or the one given', () => {
    expect(resolveConfig({ plainListener: true }, 'Edge').plainBrokerPort).toBe(1883);
    expect(resolveConfig({ plainListener: true, plainBrokerPort: 11_883 }, 'Edge').plainBrokerPort).toBe(
      11_883,
    );
    expect(resolveConfig({ plainListener: false }, 'Edge').plainBrokerPort).toBeUndefined();
  });

  it('GIVEN three receivers and raised group quotas WHEN resolved THEN they are kept', () => {
    const config = resolveConfig(
      {
        receivers: 3,
        securityGroupsPerInterface: 16,
        grantSecurityGroupCount: 16,
        rulesPerSecurityGroup: 62,
      },
      'Edge',
    );
    expect(config).toMatchObject({
      receivers: 3,
      securityGroupsPerInterface: 16,
      grantSecurityGroupCount: 16,
      rulesPerSecurityGroup: 62,
    });
  });
});

describe('resolveConfig rejects bad props, naming them', () => {
  const cases: [string, BlackcloudProps, string][] = [
    ['spaPort above 65535', { spaPort: 70_000 }, 'spaPort'],
    ['spaPort zero', { spaPort: 0 }, 'spaPort'],
    ['spaPort fractional', { spaPort: 62_201.5 }, 'spaPort'],
    ['brokerPort negative', { brokerPort: -1 }, 'brokerPort'],
    ['plainBrokerPort without plainListener', { plainBrokerPort: 1883 }, 'plainBrokerPort'],
    ['the plain listener on the TLS port', { plainListener: true, plainBrokerPort: 8883 }, 'plainBrokerPort'],
    ['plainListener not a boolean', { plainListener: 'yes' as never }, 'plainListener'],
    ['grantSeconds above the SQS delay limit', { grantSeconds: 901 }, 'grantSeconds'],
    ['grantSeconds zero', { grantSeconds: 0 }, 'grantSeconds'],
    ['clockWindowSeconds zero', { clockWindowSeconds: 0 }, 'clockWindowSeconds'],
    ['an x86 receiver', { receiverInstanceType: 't3.nano' }, 'receiverInstanceType'],
    ['an x86 broker', { brokerInstanceType: 'm5.large' }, 'brokerInstanceType'],
    ['no receiver', { receivers: 0 }, 'receivers'],
    ['21 receivers', { receivers: 21 }, 'receivers'],
    ['the health check on the SPA port', { receiverHealthPort: 62_201 }, 'receiverHealthPort'],
    ['17 groups per interface', { securityGroupsPerInterface: 17 }, 'securityGroupsPerInterface'],
    [
      'more grant groups than the interface quota',
      { securityGroupsPerInterface: 10, grantSecurityGroupCount: 11 },
      'grantSecurityGroupCount',
    ],
    [
      'rules x groups above 1000',
      { securityGroupsPerInterface: 16, rulesPerSecurityGroup: 63 },
      'rulesPerSecurityGroup',
    ],
    ['key rotation of zero hours', { keyRotationHours: 0 }, 'keyRotationHours'],
    ['a retention CloudWatch does not offer', { logRetentionDays: 42 }, 'logRetentionDays'],
    ['six grant groups', { grantSecurityGroupCount: 6 }, 'grantSecurityGroupCount'],
    ['an empty CIDR list', { spaSourceCidrs: [] }, 'spaSourceCidrs'],
    ['a CIDR without prefix', { spaSourceCidrs: ['0.0.0.0/0', '198.51.100.7'] }, 'spaSourceCidrs[1]'],
    ['an IPv4 prefix of 33', { spaSourceCidrs: ['198.51.100.0/33'] }, 'spaSourceCidrs[0]'],
    ['a duplicate CIDR', { spaSourceCidrs: ['::/0', '::/0'] }, 'spaSourceCidrs[1]'],
    ['a secret name with spaces', { brokerTlsSecretName: 'my secret' }, 'brokerTlsSecretName'],
    ['a TLS server name that is an IP', { brokerTlsServerName: '10.0.0.1' }, 'brokerTlsServerName'],
    ['a thing group with spaces', { fleetThingGroupName: 'my fleet' }, 'fleetThingGroupName'],
    ['an alarm e-mail without @', { alarmEmail: 'ops.example.org' }, 'alarmEmail'],
    ['a controller identity with a slash', { controllerIdentity: 'a/b' }, 'controllerIdentity'],
    ['ipv6 as a string', { ipv6: 'yes' as unknown as boolean }, 'ipv6'],
    ['an empty entry path', { code: { revokerEntry: '' } }, 'code.revokerEntry'],
  ];

  it.each(cases)('GIVEN %s WHEN resolved THEN InvalidPropError names the prop', (_name, props, prop) => {
    let caught: unknown;
    try {
      resolveConfig(props, 'Blackcloud');
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(InvalidPropError);
    const error = caught as InvalidPropError;
    expect(error.name).toBe('InvalidPropError');
    expect(error.prop).toBe(prop);
    expect(error.message).toContain(`prop '${prop}'`);
    expect(error.message).toContain('received');
    expect(error.message).toContain('Fix:');
  });

  it('GIVEN a bad prop WHEN the stack is built THEN synth fails before any resource, naming the prop', () => {
    // An outdir of its own, removed after: without one the CDK leaves a cdk.outXXXXXX in the temp dir.
    const outdir = mkdtempSync(join(tmpdir(), 'blackcloud-bad-prop-'));
    try {
      const app = new App({ outdir });
      expect(() => new BlackcloudStack(app, 'Bad', { grantSeconds: 3600 })).toThrow(
        /prop 'grantSeconds' must be an integer from 1 to 900; received 3600/,
      );
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });
});

describe('isCidr', () => {
  it.each([
    ['0.0.0.0/0', true],
    ['203.0.113.7/32', true],
    ['::/0', true],
    ['2001:db8::/128', true],
    ['2001:db8::/129', false],
    ['10.0.0.0/8/8', false],
    ['10.0.0.0/', false],
    ['/8', false],
    ['example.org/24', false],
    ['10.0.0.0/-1', false],
  ])('%s -> %s', (text, expected) => {
    expect(isCidr(text)).toBe(expected);
  });
});

describe('settings from CDK context', () => {
  it('GIVEN no context THEN all defaults', () => {
    expect(settingsFromContext(undefined)).toEqual({});
  });

  it('GIVEN a JSON string (cdk -c) THEN it is parsed', () => {
    expect(settingsFromContext('{"spaPort":4000,"ipv6":false}')).toEqual({ spaPort: 4000, ipv6: false });
  });

  it('GIVEN an object (cdk.json) THEN it is taken as is', () => {
    expect(settingsFromContext({ grantSeconds: 45 })).toEqual({ grantSeconds: 45 });
  });

  it('GIVEN a misspelt key THEN the error names it and lists the known ones', () => {
    expect(() => settingsFromContext({ spaPorts: 1 })).toThrow(
      /blackcloud\.spaPorts' is not a known setting.*spaPort/,
    );
  });

  it('GIVEN invalid JSON THEN the error says so', () => {
    expect(() => settingsFromContext('{spaPort:1}')).toThrow(/must be a JSON object/);
  });

  it('GIVEN a stack name THEN it must be a CloudFormation name', () => {
    expect(stackNameFromContext(undefined, 'Blackcloud')).toBe('Blackcloud');
    expect(stackNameFromContext('Edge-1', 'Blackcloud')).toBe('Edge-1');
    expect(() => stackNameFromContext('1edge', 'Blackcloud')).toThrow(/blackcloud:stackName/);
  });
});
