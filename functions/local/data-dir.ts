/**
 * The local black cloud's data directory (default `./.blackcloud`, mode 0700): where every file lives.
 *
 *   <root>/
 *     devices.yaml            the device directory the receiver reads (ids, allowed ports, key file references)
 *     endpoints.json          where the running (or last) `blackcloud up` listens: host, SPA port, MQTT port
 *     public-address.json     the address(es) devices dial, as last given to `up --public-address` (kept across runs)
 *     nonces.log              the file-backed nonce store (replay ids survive a restart)
 *     audit.jsonl             the audit trail, one JSON line per packet and grant change
 *     pki/                    local CA and broker certificate (keys 0600)
 *     keys/<id>.bc1           native SPA key, base64 of 32 bytes (0600)
 *     keys/<id>.fwknop-key    fwknop Rijndael key, base64 (0600, fwknop-format devices)
 *     keys/<id>.fwknop-hmac   fwknop HMAC key, base64 (0600, fwknop-format devices)
 *     devices/<id>/           what to copy onto the device: device.json, client.crt, client.key, ca.crt
 *     owner.lock/             held by the one process that owns the directory: `up`, or a writer when no `up` runs
 *     owner.json              who holds owner.lock: pid, command, ports (data-dir-lock.ts)
 *
 * Pure: paths only; nothing here touches the file system.
 */
import { join, resolve } from 'node:path';

export const DEFAULT_DATA_DIR = '.blackcloud';
export const DEMO_DEVICE_ID = 'demo-device';

export interface DataDirLayout {
  readonly root: string;
  readonly devicesFile: string;
  readonly endpointsFile: string;
  readonly publicAddressFile: string;
  readonly nonceFile: string;
  readonly auditFile: string;
  readonly pkiDir: string;
  readonly keysDir: string;
  readonly devicesDir: string;
  /** The owner lock (a directory, proper-lockfile's), and the record of who holds it. */
  readonly ownerLock: string;
  readonly ownerRecord: string;
  /** `keys/<id>.<suffix>`, relative to the devices file (as the directory references it). */
  keyFileRef(deviceId: string, suffix: 'bc1' | 'fwknop-key' | 'fwknop-hmac'): string;
  deviceDir(deviceId: string): string;
  deviceFile(deviceId: string): string;
}

export function dataDirLayout(root: string): DataDirLayout {
  const abs = resolve(root);
  return Object.freeze({
    root: abs,
    devicesFile: join(abs, 'devices.yaml'),
    endpointsFile: join(abs, 'endpoints.json'),
    publicAddressFile: join(abs, 'public-address.json'),
    nonceFile: join(abs, 'nonces.log'),
    auditFile: join(abs, 'audit.jsonl'),
    pkiDir: join(abs, 'pki'),
    keysDir: join(abs, 'keys'),
    devicesDir: join(abs, 'devices'),
    ownerLock: join(abs, 'owner.lock'),
    ownerRecord: join(abs, 'owner.json'),
    keyFileRef: (deviceId: string, suffix: string) => `keys/${deviceId}.${suffix}`,
    deviceDir: (deviceId: string) => join(abs, 'devices', deviceId),
    deviceFile: (deviceId: string) => join(abs, 'devices', deviceId, 'device.json'),
  });
}
