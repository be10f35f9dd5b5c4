/**
 * What the instances run at boot, exercised for real on this machine (no AWS):
 * - the operator's TLS script (infra/tls/blackcloud-tls.sh) makes a CA, the broker and client certificates and the
 *   Secrets Manager JSON; the broker's boot Python turns that JSON into files; a real Mosquitto 2 started with the
 *   generated configuration and the boot script's dynamic-security JSON (the controller its one admin), the
 *   devices enrolled through the controller's admin session as the receivers do, then enforces mutual TLS and
 *   per-device topics;
 * - the boot scripts parse as bash, the receiver's Python writes the controller files 0640, the heartbeat script
 *   writes the line the "receiver silent" alarm counts, and the agent configuration is valid JSON.
 * Required tools (bash, openssl, python3, mosquitto, node): a missing one fails the test, naming it.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectDynsecAdmin } from '../../functions/broker/dynsec-admin.ts';
import { debianDynsecPlugin } from '../../functions/broker/mosquitto-config.ts';
import { REJECT_REASONS } from '../../functions/receiver/reject-reason.ts';
import { REPO_ROOT } from '../../infra/bundle.ts';
import { AUDIT_METRICS } from '../../infra/constructs/audit.ts';
import {
  BROKER_SECRET_FILES,
  brokerBootCommands,
  brokerTlsFetchScript,
  DEVICE_TOPIC_ROOT,
  KEY_TOPIC_ROOT,
  mosquittoConf,
} from '../../infra/host/broker-host.ts';
import {
  CONTROLLER_SECRET_FILES,
  cloudWatchAgentConfig,
  controllerTlsFetchScript,
  environmentFile,
  HEARTBEAT_EVENT_TYPE,
  heartbeatUnits,
  receiverBootCommands,
  receiverPackageCommands,
  receiverUnit,
} from '../../infra/host/receiver-host.ts';

const TLS_SCRIPT = join(REPO_ROOT, 'infra/tls/blackcloud-tls.sh');
const SERVER_NAME = 'broker.blackcloud.internal';
const CONTROLLER = 'blackcloud-controller';

function requireTool(tool: string, versionArgs: string[]): void {
  const probe = spawnSync(tool, versionArgs, { encoding: 'utf8' });
  if (probe.error)
    throw new Error(`${tool} is required by test/infra/hosts.test.ts and was not found: install it`);
}

/** The text between `<<'PYTHON'...` (or another here-document mark) and its closing line in a boot script. */
function embeddedPython(script: string[], mark = 'PYTHON'): string {
  const commands = script.join('\n').split('\n');
  const start = commands.findIndex((line) => line.includes(`<<'${mark}'`));
  const end = commands.indexOf(mark, start);
  expect(start).toBeGreaterThanOrEqual(0);
  expect(end).toBeGreaterThan(start);
  return commands.slice(start + 1, end).join('\n');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

async function waitForPort(port: number, process: ChildProcess, logs: () => string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (process.exitCode !== null) throw new Error(`mosquitto exited (${process.exitCode}): ${logs()}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ port, host: '127.0.0.1' });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`mosquitto did not listen on ${port}: ${logs()}`);
}

let work: string;

beforeAll(() => {
  for (const [tool, args] of [
    ['bash', ['--version']],
    ['openssl', ['version']],
    ['python3', ['--version']],
    ['mosquitto', ['-h']],
  ] as const) {
    requireTool(tool, [...args]);
  }
  work = mkdtempSync(join(tmpdir(), 'blackcloud-hosts-'));
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe('broker: operator TLS material -> Secrets Manager JSON -> boot script -> real Mosquitto', () => {
  let ca: string;
  let tlsDir: string;
  let broker: ChildProcess | undefined;
  let brokerLog = '';
  let port: number;
  const clients: MqttClient[] = [];

  const tls = (...args: string[]) => execFileSync('bash', [TLS_SCRIPT, ...args], { encoding: 'utf8' });

  beforeAll(async () => {
    ca = join(work, 'ca');
    tls('ca', ca);
    tls('server', ca, SERVER_NAME);
    for (const name of [CONTROLLER, 'dev-a', 'dev-b']) tls('client', ca, name);
    const otherCa = join(work, 'other-ca');
    tls('ca', otherCa);
    tls('client', otherCa, 'dev-a');

    // The broker's boot Python turns the secret JSON into the files Mosquitto reads.
    const secret = join(work, 'broker-secret.json');
    writeFileSync(secret, tls('secret', ca, 'broker'), { mode: 0o600 });
    tlsDir = join(work, 'broker-tls');
    mkdirSync(tlsDir, { mode: 0o750 });
    const python = embeddedPython(
      brokerBootCommands({ port: 8883, controllerIdentity: CONTROLLER, tlsSecretName: 'x', region: 'r' }),
    );
    execFileSync('python3', ['-', secret, tlsDir], { input: python });

    port = await freePort();
    // The boot script's own plugin JSON (controller only), at this machine's plugin path.
    const dynsecFile = join(work, 'dynamic-security.json');
    writeFileSync(
      dynsecFile,
      embeddedPython(
        brokerBootCommands({ port: 8883, controllerIdentity: CONTROLLER, tlsSecretName: 'x', region: 'r' }),
        'DYNSEC',
      ),
      { mode: 0o600 },
    );
    const plugin = debianDynsecPlugin(process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu');
    const confFile = join(work, 'mosquitto.conf');
    // The generated configuration as is; the test runs as root, so tell Mosquitto not to switch users.
    writeFileSync(confFile, `${mosquittoConf({ port, tlsDir, plugin, dynsecFile })}user root\n`);
    broker = spawn('mosquitto', ['-c', confFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    broker.stdout?.on('data', (chunk: Buffer) => {
      brokerLog += chunk.toString();
    });
    broker.stderr?.on('data', (chunk: Buffer) => {
      brokerLog += chunk.toString();
    });
    await waitForPort(port, broker, () => brokerLog);
    // The devices enrolled as a receiver does at its directory refresh (functions/aws/broker-sync.ts).
    const admin = await connectDynsecAdmin({
      url: `mqtts://127.0.0.1:${port}`,
      ca: readFileSync(join(ca, 'ca.crt')),
      cert: readFileSync(join(ca, `${CONTROLLER}.crt`)),
      key: readFileSync(join(ca, `${CONTROLLER}.key`)),
      servername: SERVER_NAME,
    });
    try {
      const sent = await admin.reconcile([
        { id: 'dev-a', enabled: true },
        { id: 'dev-b', enabled: true },
      ]);
      expect(sent.length).toBeGreaterThan(0);
    } finally {
      await admin.close();
    }
  }, 60_000);

  afterAll(async () => {
    await Promise.all(clients.map((client) => client.endAsync(true).catch(() => undefined)));
    broker?.kill('SIGTERM');
  });

  const connect = async (name: string, caDir = ca): Promise<MqttClient> => {
    const client = await mqtt.connectAsync(
      `mqtts://127.0.0.1:${port}`,
      {
        ca: readFileSync(join(ca, 'ca.crt')),
        cert: readFileSync(join(caDir, `${name}.crt`)),
        key: readFileSync(join(caDir, `${name}.key`)),
        servername: SERVER_NAME,
        rejectUnauthorized: true,
        reconnectPeriod: 0,
        connectTimeout: 5000,
        protocolVersion: 4,
        clean: true,
        clientId: `${name}-${Math.random().toString(16).slice(2)}`,
      },
      false,
    );
    clients.push(client);
    return client;
  };

  it('GIVEN the secret JSON THEN the boot Python writes the three PEM files, mode 0640', () => {
    for (const file of Object.values(BROKER_SECRET_FILES)) {
      expect(statSync(join(tlsDir, file)).mode & 0o777).toBe(0o640);
    }
    expect(readFileSync(join(tlsDir, 'broker.key'), 'utf8')).toBe(
      readFileSync(join(ca, 'broker.key'), 'utf8'),
    );
    expect(readFileSync(join(tlsDir, 'ca.crt'), 'utf8')).toBe(readFileSync(join(ca, 'ca.crt'), 'utf8'));
  });

  it('GIVEN a secret without the key THEN the boot Python refuses, naming the field', () => {
    const partial = join(work, 'partial.json');
    writeFileSync(
      partial,
      JSON.stringify({
        caCertificate: '-----BEGIN CERTIFICATE-----\n',
        certificate: '-----BEGIN CERTIFICATE-----\n',
      }),
    );
    const target = join(work, 'partial-tls');
    mkdirSync(target);
    const python = embeddedPython(
      brokerBootCommands({ port: 8883, controllerIdentity: CONTROLLER, tlsSecretName: 'x', region: 'r' }),
    );
    const result = spawnSync('python3', ['-', partial, target], { input: python, encoding: 'utf8' });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('secret field privateKey is missing or not PEM');
  });

  it('GIVEN a device certificate from the CA WHEN it connects over TLS THEN the broker accepts it', async () => {
    const device = await connect('dev-a');
    expect(device.connected).toBe(true);
  });

  it('GIVEN no client certificate WHEN connecting THEN the broker refuses the TLS session', async () => {
    await expect(
      mqtt.connectAsync(
        `mqtts://127.0.0.1:${port}`,
        {
          ca: readFileSync(join(ca, 'ca.crt')),
          servername: SERVER_NAME,
          reconnectPeriod: 0,
          connectTimeout: 5000,
        },
        false,
      ),
    ).rejects.toThrow();
  });

  it('GIVEN a certificate from another CA WHEN connecting THEN the broker refuses it', async () => {
    await expect(connect('dev-a', join(work, 'other-ca'))).rejects.toThrow();
  });

  it('GIVEN dynamic security WHEN a device subscribes to every key topic THEN the SUBACK refuses it (0x80)', async () => {
    const deviceA = await connect('dev-a');
    await expect(deviceA.subscribeAsync(`${KEY_TOPIC_ROOT}/#`, { qos: 1 })).rejects.toThrow(
      /Subscribe error/,
    );
  });

  it('GIVEN dynamic security WHEN the controller publishes keys to two devices THEN each device receives only its own', async () => {
    const controller = await connect(CONTROLLER);
    const deviceA = await connect('dev-a');
    const received: string[] = [];
    deviceA.on('message', (topic) => received.push(topic));
    await deviceA.subscribeAsync(`${KEY_TOPIC_ROOT}/dev-a`, { qos: 1 });
    await expect(deviceA.subscribeAsync(`${KEY_TOPIC_ROOT}/dev-b`, { qos: 1 })).rejects.toThrow(
      /Subscribe error/,
    );
    await controller.publishAsync(`${KEY_TOPIC_ROOT}/dev-b`, 'for b', { qos: 1 });
    const own = new Promise<void>((resolve) =>
      deviceA.on('message', (topic) => topic === `${KEY_TOPIC_ROOT}/dev-a` && resolve()),
    );
    await controller.publishAsync(`${KEY_TOPIC_ROOT}/dev-a`, 'for a', { qos: 1 });
    await own;
    // Messages from one publisher arrive in order: dev-b's key, sent first, would have arrived before.
    expect(received).toEqual([`${KEY_TOPIC_ROOT}/dev-a`]);
  });

  it("GIVEN the ACL WHEN a device acks on another device's topic THEN the controller never sees it", async () => {
    const controller = await connect(CONTROLLER);
    const deviceA = await connect('dev-a');
    const received: string[] = [];
    controller.on('message', (topic) => received.push(topic));
    await controller.subscribeAsync(`${KEY_TOPIC_ROOT}/+/ack`, { qos: 1 });
    await deviceA.publishAsync(`${KEY_TOPIC_ROOT}/dev-b/ack`, 'forged', { qos: 1 });
    const own = new Promise<void>((resolve) =>
      controller.on('message', (topic) => topic.includes('/dev-a/') && resolve()),
    );
    await deviceA.publishAsync(`${KEY_TOPIC_ROOT}/dev-a/ack`, 'real', { qos: 1 });
    await own;
    expect(received).toEqual([`${KEY_TOPIC_ROOT}/dev-a/ack`]);
  });

  it('GIVEN the ACL WHEN a device publishes in its own tree THEN the controller receives it', async () => {
    const controller = await connect(CONTROLLER);
    const deviceB = await connect('dev-b');
    await controller.subscribeAsync(`${DEVICE_TOPIC_ROOT}/+/telemetry`, { qos: 1 });
    const arrived = new Promise<string>((resolve) => controller.on('message', (topic) => resolve(topic)));
    await deviceB.publishAsync(`${DEVICE_TOPIC_ROOT}/dev-b/telemetry`, '21.5', { qos: 1 });
    expect(await arrived).toBe(`${DEVICE_TOPIC_ROOT}/dev-b/telemetry`);
  });

  it('GIVEN the ACL WHEN a device publishes outside the device trees THEN nobody receives it', async () => {
    const controller = await connect(CONTROLLER);
    const deviceA = await connect('dev-a');
    const deviceB = await connect('dev-b');
    const received: string[] = [];
    deviceB.on('message', (topic) => received.push(topic));
    await deviceB.subscribeAsync(`${DEVICE_TOPIC_ROOT}/dev-b/#`, { qos: 1 });
    await deviceA.publishAsync('elsewhere/topic', 'stray', { qos: 1 });
    await deviceA.publishAsync(`${DEVICE_TOPIC_ROOT}/dev-b/telemetry`, 'forged', { qos: 1 });
    const own = new Promise<void>((resolve) => deviceB.on('message', () => resolve()));
    await controller.publishAsync(`${DEVICE_TOPIC_ROOT}/dev-b/cmd`, 'command', { qos: 1 });
    await own;
    expect(received).toEqual([`${DEVICE_TOPIC_ROOT}/dev-b/cmd`]);
  });
});

describe('boot scripts', () => {
  const receiverScript = () => [
    '#!/bin/bash',
    ...receiverPackageCommands(),
    ...receiverBootCommands({
      spaPort: 62_201,
      downloadedBundle: '/var/tmp/blackcloud/receiver.mjs',
      environment: { BLACKCLOUD_SPA_PORT: '62201', AWS_REGION: 'eu-west-1' },
      controllerTlsSecretName: 'Blackcloud/controller-tls',
      logGroupName: 'audit-group',
      region: 'eu-west-1',
    }),
  ];

  it('GIVEN both boot scripts and the per-boot TLS fetch scripts THEN bash parses them', () => {
    const scripts = {
      brokerTls: brokerTlsFetchScript({
        port: 8883,
        controllerIdentity: CONTROLLER,
        tlsSecretName: 'B/broker-tls',
        region: 'eu-west-1',
      }).split('\n'),
      controllerTls: controllerTlsFetchScript({ secretName: 'B/controller-tls', region: 'eu-west-1' }).split(
        '\n',
      ),
      broker: [
        '#!/bin/bash',
        ...brokerBootCommands({
          port: 8883,
          controllerIdentity: CONTROLLER,
          tlsSecretName: 'Blackcloud/broker-tls',
          region: 'eu-west-1',
        }),
      ],
      receiver: receiverScript(),
    };
    for (const [name, lines] of Object.entries(scripts)) {
      const file = join(work, `${name}-boot.sh`);
      writeFileSync(file, `${lines.join('\n')}\n`);
      const result = spawnSync('bash', ['-n', file], { encoding: 'utf8' });
      expect({ name, status: result.status, stderr: result.stderr }).toEqual({ name, status: 0, stderr: '' });
    }
  });

  it('GIVEN the controller secret JSON THEN the receiver boot Python writes its files, mode 0640', () => {
    const ca = join(work, 'ca');
    const secret = join(work, 'controller-secret.json');
    writeFileSync(secret, execFileSync('bash', [TLS_SCRIPT, 'secret', ca, CONTROLLER], { encoding: 'utf8' }));
    const target = join(work, 'controller-tls');
    mkdirSync(target);
    execFileSync('python3', ['-', secret, target], { input: embeddedPython(receiverScript()) });
    for (const file of Object.values(CONTROLLER_SECRET_FILES)) {
      expect(statSync(join(target, file)).mode & 0o777).toBe(0o640);
    }
    expect(readFileSync(join(target, 'controller.key'), 'utf8')).toBe(
      readFileSync(join(ca, `${CONTROLLER}.key`), 'utf8'),
    );
  });

  it('GIVEN the receiver unit THEN it runs Node 24 unprivileged, hardened, restarting on failure', () => {
    const unit = receiverUnit({ spaPort: 62_201 });
    for (const line of [
      'User=blackcloud',
      'ExecStart=/usr/bin/node-24 /opt/blackcloud/receiver/receiver.mjs',
      'Restart=on-failure',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'CapabilityBoundingSet=',
      'AmbientCapabilities=',
    ]) {
      expect(unit.split('\n')).toContain(line);
    }
    // A port below 1024 gets exactly the one capability it needs.
    const low = receiverUnit({ spaPort: 500 }).split('\n');
    expect(low).toContain('AmbientCapabilities=CAP_NET_BIND_SERVICE');
    expect(low).toContain('CapabilityBoundingSet=CAP_NET_BIND_SERVICE');
  });

  it('GIVEN an environment THEN the file is sorted NAME=value lines, and a bad name is refused', () => {
    expect(environmentFile({ B_VAR: '2', A_VAR: 'x,y' })).toBe('A_VAR=x,y\nB_VAR=2\n');
    expect(() => environmentFile({ 'bad-name': '1' })).toThrow(/invalid environment variable name bad-name/);
  });

  it('GIVEN the heartbeat script and an active receiver THEN it appends the line the alarm counts', () => {
    const bin = join(work, 'fake-bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'systemctl'), '#!/bin/sh\nexit 0\n');
    chmodSync(join(bin, 'systemctl'), 0o755);
    const log = join(work, 'heartbeat.log');
    const script = join(work, 'heartbeat.sh');
    writeFileSync(script, heartbeatUnits(log).script);
    execFileSync('sh', [script], { env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` } });
    const line = JSON.parse(readFileSync(log, 'utf8').trim()) as { type: string; time: number };
    expect(line.type).toBe(HEARTBEAT_EVENT_TYPE);
    expect(Number.isInteger(line.time)).toBe(true);
    expect(AUDIT_METRICS.heartbeats.pattern).toBe(`{ $.type = "${HEARTBEAT_EVENT_TYPE}" }`);

    // An inactive receiver writes nothing.
    writeFileSync(join(bin, 'systemctl'), '#!/bin/sh\nexit 3\n');
    execFileSync('sh', [script], { env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` } });
    expect(readFileSync(log, 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('GIVEN the agent configuration THEN it is JSON shipping the receiver, heartbeat and pre-filter files to the audit log group', () => {
    const config = JSON.parse(cloudWatchAgentConfig({ logGroupName: 'audit-group' })) as {
      logs: { logs_collected: { files: { collect_list: { file_path: string; log_group_name: string }[] } } };
    };
    expect(
      config.logs.logs_collected.files.collect_list.map((entry) => [entry.file_path, entry.log_group_name]),
    ).toEqual([
      ['/var/log/blackcloud/receiver.log', 'audit-group'],
      ['/var/log/blackcloud/heartbeat.log', 'audit-group'],
      ['/var/log/blackcloud/prefilter.log', 'audit-group'],
    ]);
  });

  it("GIVEN the audit metric filters THEN they use the receiver's own reasons and fields", () => {
    expect(REJECT_REASONS).toContain('replay');
    expect(AUDIT_METRICS.replays.pattern).toContain('$.reason = "replay"');
    expect(AUDIT_METRICS.ruleQuotaExhausted.pattern).toContain('RulesPerSecurityGroupLimitExceeded');
  });
});
