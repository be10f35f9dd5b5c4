/**
 * Where the local black cloud listens, as devices see it: the host they knock and connect to, the SPA (UDP) port
 * and the public MQTT (TCP) port. `up` records them in `endpoints.json` once bound (ports may have been 0) and
 * refreshes every device file in the data directory, so the device files always point at the running instance;
 * `devices add` reads them to write new device files.
 *
 * Contract: `readEndpoints` returns undefined when the file is missing or unreadable (callers fall back to
 * defaults); `refreshDeviceEndpoints` rewrites only the endpoint fields (spa.host, spa.port, mqtt.url) of
 * device files that differ, keeps every other field, skips files it cannot parse and returns their paths.
 */
import { readdir, readFile } from 'node:fs/promises';
import { isIPv6 } from 'node:net';
import type { DataDirLayout } from './data-dir.ts';
import { writeFileAtomic } from './device-file.ts';

export interface Endpoints {
  /** The address devices use (never a wildcard). */
  readonly host: string;
  readonly spaPort: number;
  readonly mqttPort: number;
}

export function mqttUrl(host: string, port: number): string {
  return `mqtts://${isIPv6(host) ? `[${host}]` : host}:${port}`;
}

export function deviceEndpointFields(endpoints: Endpoints): {
  spa: { host: string; port: number };
  mqttUrl: string;
} {
  return {
    spa: { host: endpoints.host, port: endpoints.spaPort },
    mqttUrl: mqttUrl(endpoints.host, endpoints.mqttPort),
  };
}

export async function writeEndpoints(layout: DataDirLayout, endpoints: Endpoints): Promise<void> {
  await writeFileAtomic(
    layout.endpointsFile,
    `${JSON.stringify({ ...endpoints, pid: process.pid, updatedAt: new Date().toISOString() }, null, 2)}\n`,
  );
}

export async function readEndpoints(layout: DataDirLayout): Promise<Endpoints | undefined> {
  try {
    const value = JSON.parse(await readFile(layout.endpointsFile, 'utf8')) as Partial<Endpoints>;
    if (
      typeof value.host === 'string' &&
      Number.isInteger(value.spaPort) &&
      Number.isInteger(value.mqttPort)
    ) {
      return { host: value.host, spaPort: value.spaPort!, mqttPort: value.mqttPort! };
    }
  } catch {
    // Missing or damaged: the caller uses defaults.
  }
  return undefined;
}

/** Points every device file under devices/ at `endpoints`. Returns the files it could not update. */
export async function refreshDeviceEndpoints(layout: DataDirLayout, endpoints: Endpoints): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(layout.devicesDir);
  } catch {
    return [];
  }
  const skipped: string[] = [];
  const fields = deviceEndpointFields(endpoints);
  for (const name of names.sort()) {
    const file = layout.deviceFile(name);
    let json: { spa?: Record<string, unknown>; mqtt?: Record<string, unknown> };
    try {
      json = JSON.parse(await readFile(file, 'utf8'));
    } catch {
      skipped.push(file);
      continue;
    }
    if (
      typeof json.spa !== 'object' ||
      typeof json.mqtt !== 'object' ||
      json.spa === null ||
      json.mqtt === null
    ) {
      skipped.push(file);
      continue;
    }
    if (
      json.spa.host === fields.spa.host &&
      json.spa.port === fields.spa.port &&
      json.mqtt.url === fields.mqttUrl
    ) {
      continue;
    }
    json.spa.host = fields.spa.host;
    json.spa.port = fields.spa.port;
    json.mqtt.url = fields.mqttUrl;
    await writeFileAtomic(file, `${JSON.stringify(json, null, 2)}\n`);
  }
  return skipped;
}
