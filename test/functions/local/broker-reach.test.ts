/**
 * Gate mode: the embedded broker has no socket of its own, so another process reaches it only through the gate,
 * after a knock (issue: "any local process reaches the broker without a knock"). The TCP sockets this process
 * listens on are read from /proc; another process holding the device's valid certificate tries each of them.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import type { AuditEvent } from '../../../functions/core/interfaces.ts';
import { DEMO_DEVICE_ID } from '../../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { PROJECT_ROOT, removeDir, tempDir, waitFor } from './helpers.ts';

/** TCP ports in LISTEN state whose socket belongs to process `pid` (Linux /proc). */
async function listeningTcpPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const match = /^socket:\[(\d+)\]$/.exec(target);
    if (match) inodes.add(match[1]!);
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const lines = (await readFile(table, 'utf8').catch(() => '')).split('\n').slice(1);
    for (const line of lines) {
      const fields = line.trim().split(/\s+/);
      // sl local_address rem_address st ... inode (field 9)
      if (fields.length < 10 || fields[3] !== '0A' || !inodes.has(fields[9]!)) continue;
      ports.push(Number.parseInt(fields[1]!.split(':')[1]!, 16));
    }
  }
  return [...new Set(ports)].sort((a, b) => a - b);
}

/** Another process: connects as the device (valid certificate) to 127.0.0.1:<port> for each port. */
function tryFromAnotherProcess(
  deviceFile: string,
  ports: readonly number[],
): Promise<Record<string, string>> {
  const script = `
    import { loadDeviceConfig } from ${JSON.stringify(join(PROJECT_ROOT, 'device-client/load-device-config.ts'))};
    import { connectToBroker } from ${JSON.stringify(join(PROJECT_ROOT, 'device-client/broker-connection.ts'))};
    const config = await loadDeviceConfig(process.argv[1]);
    const results = {};
    for (const port of JSON.parse(process.argv[2])) {
      try {
        const client = await connectToBroker(
          { ...config, mqtt: { ...config.mqtt, url: 'mqtts://127.0.0.1:' + port } },
          { deadlineMs: 1500, retryDelayMs: 200, attemptTimeoutMs: 1000 },
        );
        results[port] = 'connack';
        client.end(true);
      } catch (error) {
        results[port] = String(error.message).slice(0, 160);
      }
    }
    console.log(JSON.stringify(results));
  `;
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', script, deviceFile, JSON.stringify(ports)],
      { timeout: 30_000, cwd: PROJECT_ROOT },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`child failed: ${error.message}\n${stderr}`));
        else resolve(JSON.parse(stdout) as Record<string, string>);
      },
    );
  });
}

let dataDir: string | undefined;
let cloud: LocalCloud | undefined;

beforeEach(async () => {
  dataDir = await tempDir('bc-reach');
});

afterEach(async () => {
  await cloud?.close();
  cloud = undefined;
  await removeDir(dataDir);
});

describe('gate mode: the broker is reachable only through the gate', () => {
  it('listens on the gate port alone; another process gets nowhere without a knock, and in after one', async () => {
    const events: AuditEvent[] = [];
    cloud = await startLocalCloud(resolveUpConfig({ dataDir: dataDir!, spaPort: '0', mqttPort: '0' }), {
      onAudit: (event) => events.push(event),
    });
    expect(cloud.broker).toEqual({ embedded: true, inProcess: true });
    const ports = await listeningTcpPorts(process.pid);
    expect(ports).toEqual([cloud.mqtt.port]);

    const deviceFile = cloud.layout.deviceFile(DEMO_DEVICE_ID);
    const before = await tryFromAnotherProcess(deviceFile, ports);
    expect(Object.values(before).some((outcome) => outcome === 'connack')).toBe(false);
    expect(Object.keys(before)).toEqual(ports.map(String));

    // The same process and certificate get in once the device has knocked (the control: the child can connect).
    const config = await loadDeviceConfig(deviceFile);
    const io = { now: () => Date.now(), randomBytes: (n: number) => new Uint8Array(randomBytes(n)) };
    await sendDatagram(config.spa.host, config.spa.port, buildKnock(config, io).bytes);
    await waitFor(() => events.find((event) => event.type === 'grant.opened'), 'the grant');
    expect(await tryFromAnotherProcess(deviceFile, [cloud.mqtt.port])).toEqual({
      [cloud.mqtt.port]: 'connack',
    });
  }, 60_000);
});
