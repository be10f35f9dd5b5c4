/**
 * The AWS fleet against moto server: the stack found from its CloudFormation outputs; enrolment (IoT thing in
 * the fleet group, keys in the devices table and never in attributes, certificate from the operator's CA,
 * bundle 0600) read back by the receiver's own IotDeviceDirectory; a bulk run interrupted half way and re-run
 * creates every device exactly once; disable/remove revoke the security-group rules and grants items; the audit
 * comes from CloudWatch Logs. Plus the CLI's messages when the stack, credentials or region are missing.
 */
import { spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateStackCommand } from '@aws-sdk/client-cloudformation';
import {
  CreateLogGroupCommand,
  CreateLogStreamCommand,
  PutLogEventsCommand,
} from '@aws-sdk/client-cloudwatch-logs';
import { PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { AuthorizeSecurityGroupIngressCommand, DescribeSecurityGroupRulesCommand } from '@aws-sdk/client-ec2';
import {
  CreateThingCommand,
  CreateThingTypeCommand,
  DescribeThingCommand,
  IoTClient,
  ListThingsInThingGroupCommand,
} from '@aws-sdk/client-iot';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createOperatorClients, type OperatorClients } from '../../../cli/fleet/aws-clients.ts';
import { AwsFleet, openAwsFleet } from '../../../cli/fleet/aws-fleet.ts';
import { enrolAll, expandNames } from '../../../cli/fleet/enrol.ts';
import { FleetError } from '../../../cli/fleet/fleet.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { deviceItem, keyItem } from '../../../functions/aws/device-record.ts';
import { DynamoGrantStore } from '../../../functions/aws/dynamo-grant-store.ts';
import { IotDeviceDirectory } from '../../../functions/aws/iot-device-directory.ts';
import { formatRuleDescription } from '../../../functions/aws/rule-description.ts';
import { STACK_OUTPUTS } from '../../../functions/core/stack-outputs.ts';
import { createCa } from '../../../functions/pki/certificate-authority.ts';
import { cli, removeDir, tempDir } from '../../functions/local/helpers.ts';
import {
  createBrokerGroups,
  createTable,
  createThingGroup,
  MOTO_REGION,
  type MotoServer,
  setMotoEnv,
  startMoto,
} from '../../support/moto.ts';
import { immediateRetry } from '../../support/retry.ts';

const FLEET = 'bc9-fleet';
const STACK = 'Blackcloud';
const retry = immediateRetry(2);

let moto: MotoServer;
let clients: OperatorClients;
let groupId: string;
let work: string;
let caDir: string;
let now: number;

async function createStack(outputs: Record<string, string>, name = STACK): Promise<void> {
  await clients.cloudformation.send(
    new CreateStackCommand({
      StackName: name,
      TemplateBody: JSON.stringify({
        Resources: { Placeholder: { Type: 'AWS::SQS::Queue', Properties: {} } },
        Outputs: Object.fromEntries(Object.entries(outputs).map(([key, value]) => [key, { Value: value }])),
      }),
    }),
  );
}

function stackOutputs(): Record<string, string> {
  return {
    [STACK_OUTPUTS.devicesTable]: 'devices',
    [STACK_OUTPUTS.grantsTable]: 'grants',
    [STACK_OUTPUTS.fleetThingGroup]: FLEET,
    [STACK_OUTPUTS.deviceThingType]: 'bc9-device',
    [STACK_OUTPUTS.brokerSecurityGroupIds]: groupId,
    [STACK_OUTPUTS.auditLogGroup]: 'bc9-audit',
    [STACK_OUTPUTS.receiverAddress]: '198.51.100.7',
    [STACK_OUTPUTS.spaPort]: '62201',
    [STACK_OUTPUTS.brokerAddress]: '198.51.100.8',
    [STACK_OUTPUTS.brokerPort]: '8883',
    [STACK_OUTPUTS.brokerTlsServerName]: 'broker.blackcloud.internal',
  };
}

async function fleet(overrides: Partial<OperatorClients> = {}, stackName = STACK): Promise<AwsFleet> {
  const opened = await openAwsFleet({ stack: stackName, ca: caDir, out: join(work, 'bundles') });
  expect(opened).toBeInstanceOf(AwsFleet);
  const stack = (opened as AwsFleet).stack;
  return new AwsFleet({
    clients: { ...clients, ...overrides },
    stack,
    caDir,
    bundleDir: join(work, 'bundles'),
    operator: 'ops@laptop',
    clock: { now: () => now },
    retry,
  });
}

async function scanDevicesTable(): Promise<Record<string, unknown>[]> {
  const result = await clients.dynamodb.send(new ScanCommand({ TableName: 'devices' }));
  return (result.Items ?? []).map((item) => Object.fromEntries(Object.entries(item)));
}

async function fleetThings(): Promise<string[]> {
  const page = await clients.iot.send(new ListThingsInThingGroupCommand({ thingGroupName: FLEET }));
  return (page.things ?? []).sort();
}

async function rules(): Promise<{ cidr: string; description: string }[]> {
  const result = await clients.ec2.send(
    new DescribeSecurityGroupRulesCommand({ Filters: [{ Name: 'group-id', Values: [groupId] }] }),
  );
  return (result.SecurityGroupRules ?? [])
    .filter((rule) => rule.IsEgress === false)
    .map((rule) => ({ cidr: rule.CidrIpv4 ?? rule.CidrIpv6 ?? '', description: rule.Description ?? '' }))
    .sort((a, b) => a.cidr.localeCompare(b.cidr));
}

async function openGrant(deviceId: string, address: string): Promise<void> {
  const expiresAt = now + 30_000;
  await clients.ec2.send(
    new AuthorizeSecurityGroupIngressCommand({
      GroupId: groupId,
      IpPermissions: [
        {
          IpProtocol: 'tcp',
          FromPort: 8883,
          ToPort: 8883,
          IpRanges: [
            { CidrIp: `${address}/32`, Description: formatRuleDescription(deviceId, expiresAt / 1000) },
          ],
        },
      ],
    }),
  );
  await new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' }).put({
    deviceId,
    address,
    family: 4,
    access: [{ protocol: 'tcp', port: 8883 }],
    openedAt: now,
    expiresAt,
    securityGroupIds: [groupId],
  });
}

beforeAll(async () => {
  moto = await startMoto();
  setMotoEnv(moto.endpoint);
  work = await tempDir('bc9-aws');
  // The operator's CA as infra/tls/blackcloud-tls.sh makes it: SEC1 EC key, 0600.
  const ca = await createCa('bc9 test CA');
  caDir = join(work, 'ca');
  await import('node:fs/promises').then((fs) => fs.mkdir(caDir, { mode: 0o700 }));
  await writeFile(join(caDir, 'ca.crt'), ca.cert, { mode: 0o644 });
  await writeFile(join(caDir, 'ca.key'), createPrivateKey(ca.key).export({ type: 'sec1', format: 'pem' }), {
    mode: 0o600,
  });
});

afterAll(async () => {
  await moto?.stop();
  await removeDir(work);
});

beforeEach(async () => {
  await moto.reset();
  now = Date.now();
  clients = createOperatorClients({ region: MOTO_REGION, endpoint: moto.endpoint });
  await createTable(clients.dynamodb, 'devices');
  await createTable(clients.dynamodb, 'grants', 'ttl');
  await createThingGroup(clients.iot, FLEET);
  await clients.iot.send(new CreateThingTypeCommand({ thingTypeName: 'bc9-device' }));
  groupId = (await createBrokerGroups(clients.ec2, 1)).groupIds[0]!;
  await clients.logs.send(new CreateLogGroupCommand({ logGroupName: 'bc9-audit' }));
  await createStack(stackOutputs());
  await removeDir(join(work, 'bundles'));
});

afterEach(() => {
  for (const client of Object.values(clients)) client.destroy();
});

describe('the stack from its CloudFormation outputs', () => {
  it('finds the stack; a missing stack or missing outputs are one clear error each', async () => {
    const found = (await openAwsFleet({ stack: STACK, ca: caDir })) as AwsFleet;
    expect(found.description).toBe(`stack ${STACK} in ${MOTO_REGION}`);
    expect(found.stack).toMatchObject({
      brokerSecurityGroupIds: [groupId],
      spaPort: 62201,
      brokerPort: 8883,
    });

    await expect(openAwsFleet({ stack: 'Elsewhere' })).rejects.toThrow(
      /^stack Elsewhere does not exist in us-east-1; fix: pass --stack NAME \(and --region\) of your deployment, or deploy it with "npx cdk deploy"$/,
    );
    const partial = stackOutputs();
    delete partial[STACK_OUTPUTS.devicesTable];
    partial[STACK_OUTPUTS.spaPort] = 'udp';
    await createStack(partial, 'OldStack');
    await expect(openAwsFleet({ stack: 'OldStack' })).rejects.toThrow(
      /stack OldStack in us-east-1 is not a blackcloud stack of this version \(DevicesTableName is missing; SpaPort is "udp", not a port 1\.\.65535\); fix: deploy the current infra\//,
    );
  });
});

describe('enrolment on AWS', () => {
  it('creates the thing, the keys (never in attributes), the certificate and a 0600 bundle the receiver accepts', async () => {
    const ops = await fleet();
    const native = await ops.enrol({ deviceId: 'truck-1', format: 'native' });
    const legacy = await ops.enrol({ deviceId: 'meter-1', format: 'fwknop', maxOpenSeconds: 60 });

    expect(await fleetThings()).toEqual(['meter-1', 'truck-1']);
    const thing = await clients.iot.send(new DescribeThingCommand({ thingName: 'meter-1' }));
    expect(thing.thingTypeName).toBe('bc9-device');
    expect(thing.attributes).toEqual({ enabled: 'true', allowedAccess: 'tcp/8883', maxOpenSeconds: '60' });
    for (const file of ['device.json', 'client.crt', 'client.key', 'ca.crt', 'fwknoprc']) {
      expect({ file, mode: (await stat(join(legacy.bundleDir, file))).mode & 0o777 }).toEqual({
        file,
        mode: 0o600,
      });
    }
    const config = await loadDeviceConfig(native.deviceFile);
    expect(config.spa).toMatchObject({ host: '198.51.100.7', port: 62201, format: 'native' });
    expect(config.mqtt).toMatchObject({
      url: 'mqtts://198.51.100.8:8883',
      servername: 'broker.blackcloud.internal',
    });
    const cert = new X509Certificate(await readFile(join(native.bundleDir, 'client.crt')));
    expect(cert.subject).toBe('CN=truck-1');
    expect(cert.verify(new X509Certificate(await readFile(join(caDir, 'ca.crt'))).publicKey)).toBe(true);

    // The receiver's own directory finds each device by its key id, with the key of its bundle.
    const directory = new IotDeviceDirectory({
      iot: clients.iot,
      dynamodb: clients.dynamodb,
      devicesTable: 'devices',
      fleetThingGroup: FLEET,
      clock: { now: () => now },
      defaultMaxOpenSeconds: 30,
    });
    const found = await directory.byKeyId(native.keyId);
    expect(found?.device).toMatchObject({ id: 'truck-1', enabled: true, maxOpenSeconds: 30 });
    expect(Buffer.from(found!.key.key)).toEqual(Buffer.from(config.spa.native!.key));
    const meter = await directory.device('meter-1');
    expect(meter?.fwknop?.username).toBe('meter-1');
    expect(legacy.fwknop?.commandLine).toMatch(
      /^fwknop -A tcp\/8883 -s -D 198\.51\.100\.7 -p 62201 -U meter-1/,
    );

    await expect(ops.enrol({ deviceId: 'truck-1', format: 'native' })).rejects.toThrow(
      /device "truck-1" already exists in stack Blackcloud in us-east-1/,
    );
    expect((await ops.list()).map((device) => [device.id, device.enabled, device.formats.join('+')])).toEqual(
      [
        ['meter-1', true, 'native+fwknop'],
        ['truck-1', true, 'native'],
      ],
    );
  });

  it('enrols a plain device (--transport plain): transport attribute, no certificate, device.json on mqtt://broker:plain port', async () => {
    // Without the plain listener the stack refuses, naming the fix, and leaves nothing behind.
    const tlsOnly = await fleet();
    await expect(tlsOnly.enrol({ deviceId: 'tiny-0', format: 'native', transport: 'plain' })).rejects.toThrow(
      /has no plain listener.*fix: deploy with -c blackcloud='\{"plainListener":true\}'/,
    );
    expect(await fleetThings()).toEqual([]);

    await createStack({ ...stackOutputs(), [STACK_OUTPUTS.brokerPlainPort]: '1883' }, 'Plainstack');
    const ops = await fleet({}, 'Plainstack');
    const tiny = await ops.enrol({ deviceId: 'tiny-1', format: 'native', transport: 'plain' });
    expect(tiny).toMatchObject({ transport: 'plain', access: [{ protocol: 'tcp', port: 1883 }] });
    const thing = await clients.iot.send(new DescribeThingCommand({ thingName: 'tiny-1' }));
    expect(thing.attributes).toEqual({ enabled: 'true', allowedAccess: 'tcp/1883', transport: 'plain' });
    expect((await readdir(tiny.bundleDir)).sort()).toEqual(['device.json']);
    const config = await loadDeviceConfig(tiny.deviceFile);
    expect(config.mqtt).toEqual({ transport: 'plain', url: 'mqtt://198.51.100.8:1883' });
    const item = (await scanDevicesTable()).find(
      (entry) => (entry.pk as { S: string }).S === 'device#tiny-1',
    );
    expect(item).toBeDefined();
    expect(item).not.toHaveProperty('certSerial');
    expect(item).not.toHaveProperty('enrolment');

    // The receiver's own directory reads the transport; a TLS device enrolled next to it stays tls.
    const tls = await ops.enrol({ deviceId: 'truck-2', format: 'native' });
    expect((await readdir(tls.bundleDir)).sort()).toEqual([
      'ca.crt',
      'client.crt',
      'client.key',
      'device.json',
    ]);
    const directory = new IotDeviceDirectory({
      iot: clients.iot,
      dynamodb: clients.dynamodb,
      devicesTable: 'devices',
      fleetThingGroup: FLEET,
      clock: { now: () => now },
      defaultMaxOpenSeconds: 30,
    });
    expect((await directory.byKeyId(tiny.keyId))?.device.transport).toBe('plain');
    expect((await directory.byKeyId(tls.keyId))?.device.transport).toBeUndefined();
    expect((await ops.show('tiny-1'))?.transport).toBe('plain');

    // A plain device knocks with BC1 only; its removal has no certificate to revoke.
    await expect(ops.enrol({ deviceId: 'tiny-2', format: 'fwknop', transport: 'plain' })).rejects.toThrow(
      /a plain device knocks with BC1 only/,
    );
    const removed = await ops.remove('tiny-1');
    expect(removed.notes).toContain('tiny-1 is a plain device: it has no certificate to revoke');
    expect(await fleetThings()).toEqual(['truck-2']);
  });

  it('a bulk run interrupted half way, then re-run, creates every device exactly once', async () => {
    const ids = expandNames([], 8, 'bulk-');
    // An IoT client that fails CreateThing for bulk-5, as a throttled or broken call would: real moto otherwise.
    const failingIot = new IoTClient({ region: MOTO_REGION, endpoint: moto.endpoint, maxAttempts: 1 });
    failingIot.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { thingName?: string };
        if (context.commandName === 'CreateThingCommand' && input.thingName === 'bulk-5') {
          throw Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
        }
        return next(args);
      },
      { step: 'initialize', name: 'failBulk5' },
    );
    // And a device a killed run left behind: pending item, key item, thing; no bundle.
    await clients.dynamodb.send(
      new PutItemCommand({
        TableName: 'devices',
        Item: { ...deviceItem('bulk-7', [7]), enrolment: { S: 'pending' } },
      }),
    );
    await clients.dynamodb.send(
      new PutItemCommand({
        TableName: 'devices',
        Item: keyItem('bulk-7', { keyId: 7, key: new Uint8Array(32) }),
      }),
    );
    await clients.iot.send(new CreateThingCommand({ thingName: 'bulk-7' }));

    const requests = ids.map((deviceId) => ({ deviceId, format: 'native' as const }));
    const first = await enrolAll({ fleet: await fleet({ iot: failingIot }), requests, concurrency: 1 });
    failingIot.destroy();
    expect(first.created.map((device) => device.deviceId)).toEqual(ids.slice(0, 4));
    expect(first.failed.map((failure) => failure.deviceId)).toEqual(['bulk-5']);
    expect(String(first.failed[0]?.error)).toContain('Rate exceeded');
    expect(await fleetThings()).toEqual(ids.slice(0, 4)); // bulk-5 rolled back; bulk-7 is no fleet member

    const ops = await fleet();
    expect(await ops.state('bulk-5')).toBe('absent');
    expect(await ops.state('bulk-7')).toBe('partial');
    const second = await enrolAll({ fleet: ops, requests, concurrency: 3 });
    expect([...second.skipped].sort()).toEqual(ids.slice(0, 4));
    expect(second.created.map((device) => device.deviceId).sort()).toEqual(ids.slice(4));

    expect(await fleetThings()).toEqual(ids);
    const items = await scanDevicesTable();
    const deviceItems = items.filter((item) => String((item.pk as { S: string }).S).startsWith('device#'));
    const keyItems = items.filter((item) => String((item.pk as { S: string }).S).startsWith('key#'));
    expect(deviceItems.map((item) => (item.deviceId as { S: string }).S).sort()).toEqual(ids);
    expect(deviceItems.every((item) => item.enrolment === undefined)).toBe(true);
    expect(keyItems.map((item) => (item.deviceId as { S: string }).S).sort()).toEqual(ids);
    expect(keyItems.some((item) => (item.keyId as { N: string }).N === '7')).toBe(false); // the stale key is gone
    expect((await readdir(join(work, 'bundles'))).sort()).toEqual(ids);
  });
});

describe('disable, enable, remove and grants on AWS', () => {
  it('disable refuses the device and revokes its rules and grants items; remove deletes everything', async () => {
    const ops = await fleet();
    await ops.enrol({ deviceId: 'cam-1', format: 'native' });
    await ops.enrol({ deviceId: 'cam-2', format: 'native' });
    await openGrant('cam-1', '203.0.113.10');
    await openGrant('cam-2', '203.0.113.20');
    expect((await ops.grants()).map((grant) => [grant.address, grant.deviceId])).toEqual([
      ['203.0.113.10', 'cam-1'],
      ['203.0.113.20', 'cam-2'],
    ]);

    const disabled = await ops.setEnabled('cam-1', false);
    expect(disabled).toMatchObject({ changed: true, disconnected: undefined });
    expect(disabled.revoked.map((grant) => [grant.address, grant.deviceId, grant.access])).toEqual([
      ['203.0.113.10', 'cam-1', ['tcp/8883']],
    ]);
    expect(disabled.notes[0]).toMatch(
      /refuse cam-1's knocks and the broker closes its open MQTT session at their next device-index refresh/,
    );
    const thing = await clients.iot.send(new DescribeThingCommand({ thingName: 'cam-1' }));
    expect(thing.attributes?.enabled).toBe('false');
    expect((await rules()).map((rule) => rule.cidr)).toEqual(['203.0.113.20/32']);
    expect((await ops.grants()).map((grant) => grant.deviceId)).toEqual(['cam-2']);
    expect((await ops.setEnabled('cam-1', false)).changed).toBe(false);
    expect((await ops.show('cam-1'))?.enabled).toBe(false);
    expect((await ops.setEnabled('cam-1', true)).changed).toBe(true);

    expect((await ops.revokeGrants({ address: '203.0.113.20' })).map((grant) => grant.deviceId)).toEqual([
      'cam-2',
    ]);
    expect(await rules()).toEqual([]);
    expect(await ops.grants()).toEqual([]);
    await expect(ops.revokeGrants({ address: 'not-an-ip' })).rejects.toThrow(
      /is not an IPv4 or IPv6 address/,
    );

    // A rule left by a crashed receiver (no grants item) is revoked and reported from its description.
    await clients.ec2.send(
      new AuthorizeSecurityGroupIngressCommand({
        GroupId: groupId,
        IpPermissions: [
          {
            IpProtocol: 'tcp',
            FromPort: 8883,
            ToPort: 8883,
            IpRanges: [
              { CidrIp: '203.0.113.30/32', Description: formatRuleDescription('cam-1', now / 1000 + 30) },
            ],
          },
        ],
      }),
    );
    expect(await ops.revokeGrants({ deviceId: 'cam-1' })).toEqual([
      {
        deviceId: 'cam-1',
        address: '203.0.113.30',
        access: ['tcp/8883'],
        openedAt: 0,
        expiresAt: Math.ceil(now / 1000 + 30) * 1000,
      },
    ]);
    expect(await rules()).toEqual([]);

    await openGrant('cam-2', '203.0.113.20');
    const serial = new X509Certificate(await readFile(join(work, 'bundles/cam-2/client.crt'))).serialNumber;
    const removed = await ops.remove('cam-2');
    expect(removed.revoked.map((grant) => grant.address)).toEqual(['203.0.113.20']);
    expect(removed.notes[1]).toBe(
      `certificate ${serial.toLowerCase()} (CN cam-2) revoked in ${join(caDir, 'crl.pem')} (1 revoked); the broker ` +
        "drops the device at the receivers' next index refresh (dynamic security); for defence in depth also put " +
        'the PEM as "crl" in the broker TLS secret and reboot the broker (docs/deploy.md, "Operating")',
    );
    // The CRL is signed by the CA and lists the certificate (checked by OpenSSL itself).
    const crl = spawnSync(
      'openssl',
      ['crl', '-in', join(caDir, 'crl.pem'), '-CAfile', join(caDir, 'ca.crt'), '-noout', '-text'],
      {
        encoding: 'utf8',
      },
    );
    expect(crl.stderr).toContain('verify OK');
    expect(crl.stdout).toContain(`Serial Number: ${serial}`);
    expect((await stat(join(caDir, 'crl.pem'))).mode & 0o777).toBe(0o600);
    expect(await fleetThings()).toEqual(['cam-1']);
    expect((await scanDevicesTable()).map((item) => (item.deviceId as { S: string }).S).sort()).toEqual([
      'cam-1',
      'cam-1',
    ]);
    expect(await readdir(join(work, 'bundles'))).toEqual(['cam-1']);
    await expect(ops.remove('cam-2')).rejects.toThrow(FleetError);
    await expect(ops.setEnabled('ghost', false)).rejects.toThrow(
      /device "ghost" is not in stack Blackcloud in us-east-1; fix: check the id with "blackcloud devices list --aws"/,
    );

    // Operator actions went to the audit log group, next to the receiver's lines.
    const operatorRecords: string[] = [];
    for await (const record of ops.audit({ since: now - 60_000 })) {
      operatorRecords.push(`${record.type} ${String(record.deviceId)}`);
    }
    expect(operatorRecords).toEqual([
      'device.added cam-1',
      'device.added cam-2',
      'device.disabled cam-1',
      'device.enabled cam-1',
      'device.removed cam-2',
    ]);
  });
});

describe('audit from CloudWatch Logs', () => {
  it('reads the receiver lines of the audit log group, filtered by time and device; metrics and heartbeats skipped', async () => {
    await clients.logs.send(
      new CreateLogStreamCommand({ logGroupName: 'bc9-audit', logStreamName: 'i-1/receiver' }),
    );
    const line = (type: string, deviceId: string, time: number) =>
      JSON.stringify({ kind: 'audit', type, time, deviceId, source: '203.0.113.5', isoTime: 'x' });
    await clients.logs.send(
      new PutLogEventsCommand({
        logGroupName: 'bc9-audit',
        logStreamName: 'i-1/receiver',
        logEvents: [
          { timestamp: now - 7_200_000, message: line('packet.accepted', 'old-1', now - 7_200_000) },
          { timestamp: now - 60_000, message: line('packet.accepted', 'cam-9', now - 60_000) },
          { timestamp: now - 59_000, message: '{"_aws":{"Timestamp":1},"PacketsAccepted":1}' },
          { timestamp: now - 58_000, message: line('grant.opened', 'cam-8', now - 58_000) },
          { timestamp: now - 57_000, message: 'heartbeat' },
        ],
      }),
    );
    const ops = await fleet();
    const read = async (query: Parameters<AwsFleet['audit']>[0]) => {
      const out: string[] = [];
      for await (const record of ops.audit(query)) out.push(`${record.type}/${String(record.deviceId)}`);
      return out;
    };
    expect(await read({})).toEqual(['packet.accepted/old-1', 'packet.accepted/cam-9', 'grant.opened/cam-8']);
    expect(await read({ since: now - 3_600_000 })).toEqual(['packet.accepted/cam-9', 'grant.opened/cam-8']);
    expect(await read({ since: now - 3_600_000, deviceId: 'cam-8' })).toEqual(['grant.opened/cam-8']);
  });
});

describe('audit --follow on AWS', () => {
  it('prints each new log event once, until aborted', async () => {
    await clients.logs.send(
      new CreateLogStreamCommand({ logGroupName: 'bc9-audit', logStreamName: 'i-2/receiver' }),
    );
    const put = (type: string, time: number) =>
      clients.logs.send(
        new PutLogEventsCommand({
          logGroupName: 'bc9-audit',
          logStreamName: 'i-2/receiver',
          logEvents: [
            { timestamp: time, message: JSON.stringify({ kind: 'audit', type, time, deviceId: 'bus-1' }) },
          ],
        }),
      );
    await put('packet.accepted', now - 1000);
    const ops = new AwsFleet({
      clients,
      stack: (await fleet()).stack,
      caDir,
      bundleDir: join(work, 'bundles'),
      operator: 'ops@laptop',
      followPollMs: 20,
    });
    const controller = new AbortController();
    const seen: string[] = [];
    for await (const record of ops.audit({ since: now - 60_000, follow: true, signal: controller.signal })) {
      seen.push(record.type);
      if (seen.length === 1) await put('grant.opened', now - 1000); // same instant as the first: not a duplicate
      if (seen.length === 2) await put('grant.revoked', now + 1000);
      if (seen.length === 3) controller.abort();
    }
    expect(seen).toEqual(['packet.accepted', 'grant.opened', 'grant.revoked']);
  });
});

describe('blackcloud --aws from the command line', () => {
  const noAws = {
    AWS_ACCESS_KEY_ID: '',
    AWS_SECRET_ACCESS_KEY: '',
    AWS_SESSION_TOKEN: '',
    AWS_PROFILE: '',
    AWS_CONFIG_FILE: '/nonexistent/bc9-config',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/bc9-credentials',
    AWS_EC2_METADATA_DISABLED: 'true',
  };

  it('lists the fleet of the stack; says what to fix when the stack, credentials or region are missing', async () => {
    const ops = await fleet();
    await ops.enrol({ deviceId: 'van-1', format: 'native' });
    const listed = await cli(['devices', 'list', '--aws', '--out', join(work, 'bundles')]);
    expect(listed.code).toBe(0);
    expect(listed.stderr).not.toContain('blackcloud:');
    expect(listed.stdout).toMatch(/^ID +STATE +ACCESS +FORMATS\nvan-1 +enabled +tcp\/8883 +native\n$/);

    const noStack = await cli(['grants', 'list', '--stack', 'Nope']);
    expect(noStack.code).toBe(1);
    expect(noStack.stderr).toMatch(
      /^blackcloud: stack Nope does not exist in us-east-1; fix: pass --stack NAME/m,
    );

    const noCredentials = await cli(['devices', 'list', '--aws'], {
      env: { ...noAws, AWS_REGION: MOTO_REGION },
    });
    expect(noCredentials.code).toBe(1);
    expect(noCredentials.stderr).toMatch(
      /^blackcloud: no AWS credentials found \(standard chain: .*\); fix: /m,
    );

    const noRegion = await cli(['audit', '--aws'], {
      env: { ...noAws, AWS_REGION: '', AWS_DEFAULT_REGION: '' },
    });
    expect(noRegion.code).toBe(1);
    expect(noRegion.stderr).toMatch(/^blackcloud: no AWS region: pass --region REGION, or set AWS_REGION/m);

    const mixed = await cli(['devices', 'list', '--aws', '--data-dir', 'x']);
    expect(mixed.stderr).toMatch(/^blackcloud: --data-dir: applies to the local black cloud only/m);
  });
});
