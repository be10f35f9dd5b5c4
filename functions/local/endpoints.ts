/**
 * Where the local black cloud listens, as devices see it: the host they knock and connect to, the SPA (UDP) port
 * and the public MQTT (TCP) port. `up` records them in `endpoints.json` once bound (ports may have been 0) and
 * refreshes every device file in the data directory, so the device files always point at the running instance;
 * `devices add` reads them to write new device files.
 *
 * Contract: `readEndpoints` returns undefined when the file is missing or unreadable (callers fall back to
 * defaults); `refreshDeviceEndpoints(layout, endpoints, generated)` rewrites only the endpoint fields (spa.host,
 * spa.port, mqtt.url; a plain-profile device file's url names `plainPort` with `mqtt://`) of device files, and of those only a field that still holds what blackcloud wrote there
 * (its value for one of the `generated` endpoints: those of the previous `up` and of this run's provisioning).
 * A field with any other value was edited by hand and is kept (docs/local.md "A device on another machine"). It
 * keeps every other field, skips files it cannot parse, and reports the files it updated, kept and skipped.
 */
import { readdir, readFile } from 'node:fs/promises';
import { isIPv6 } from 'node:net';
import type { DeviceTransport } from '../core/transport.ts';
import type { DataDirLayout } from './data-dir.ts';
import { writeFileAtomic } from './device-file.ts';
import { DEFAULT_PLAIN_PORT } from './up-config.ts';

export interface Endpoints {
  /** The address devices use (never a wildcard). */
  readonly host: string;
  readonly spaPort: number;
  readonly mqttPort: number;
  /** The plain profile's public port, when `up` opened one. */
  readonly plainPort?: number;
}

export function mqttUrl(host: string, port: number): string {
  return `mqtts://${isIPv6(host) ? `[${host}]` : host}:${port}`;
}

/** The plain profile's URL (no TLS). */
export function plainMqttUrl(host: string, port: number): string {
  return `mqtt://${isIPv6(host) ? `[${host}]` : host}:${port}`;
}

export function deviceEndpointFields(
  endpoints: Endpoints,
  transport: DeviceTransport = 'tls',
): {
  spa: { host: string; port: number };
  mqttUrl: string;
} {
  return {
    spa: { host: endpoints.host, port: endpoints.spaPort },
    mqttUrl:
      transport === 'plain'
        ? plainMqttUrl(endpoints.host, endpoints.plainPort ?? DEFAULT_PLAIN_PORT)
        : mqttUrl(endpoints.host, endpoints.mqttPort),
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
      return {
        host: value.host,
        spaPort: value.spaPort!,
        mqttPort: value.mqttPort!,
        ...(Number.isInteger(value.plainPort) ? { plainPort: value.plainPort! } : {}),
      };
    }
  } catch {
    // Missing or damaged: the caller uses defaults.
  }
  return undefined;
}

export interface EndpointRefresh {
  /** Files whose endpoint fields now name `endpoints`. */
  readonly updated: string[];
  /** Files with an endpoint field edited by hand, left as it is: which fields. */
  readonly kept: { readonly file: string; readonly fields: readonly string[] }[];
  /** Files that are not a device file (invalid JSON, no spa or mqtt object). */
  readonly skipped: string[];
}

/** Points the endpoint fields of every device file under devices/ at `endpoints`, unless edited by hand. */
export async function refreshDeviceEndpoints(
  layout: DataDirLayout,
  endpoints: Endpoints,
  generated: readonly Endpoints[],
): Promise<EndpointRefresh> {
  const result: EndpointRefresh = { updated: [], kept: [], skipped: [] };
  let names: string[];
  try {
    names = await readdir(layout.devicesDir);
  } catch {
    return result;
  }
  const { skipped } = result;
  const known = generated.flatMap((item) => [
    deviceEndpointFields(item),
    deviceEndpointFields(item, 'plain'),
  ]);
  const wrote = {
    'spa.host': new Set(known.map((item) => item.spa.host)),
    'spa.port': new Set(known.map((item) => item.spa.port)),
    'mqtt.url': new Set(known.map((item) => item.mqttUrl)),
  };
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
    const { spa, mqtt } = json;
    const fields = deviceEndpointFields(endpoints, mqtt.transport === 'plain' ? 'plain' : 'tls');
    const slots = [
      ['spa.host', spa.host, fields.spa.host, (value: string | number) => (spa.host = value)],
      ['spa.port', spa.port, fields.spa.port, (value: string | number) => (spa.port = value)],
      ['mqtt.url', mqtt.url, fields.mqttUrl, (value: string | number) => (mqtt.url = value)],
    ] as const;
    const handEdited: string[] = [];
    let changed = false;
    for (const [name, current, next, set] of slots) {
      if (current === next) continue;
      if (!(wrote[name] as Set<unknown>).has(current)) {
        handEdited.push(name);
        continue;
      }
      set(next);
      changed = true;
    }
    if (handEdited.length > 0) result.kept.push({ file, fields: handEdited });
    if (!changed) continue;
    await writeFileAtomic(file, `${JSON.stringify(json, null, 2)}\n`);
    result.updated.push(file);
  }
  return result;
}
