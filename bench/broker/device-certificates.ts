/**
 * The broker-sessions bench's credentials, issued once and cached: a local CA and broker certificate
 * (functions/pki/local-ca.ts, ECDSA P-256), one client certificate per simulated device (CN
 * `sessionDeviceId(i)`, its own P-256 key) and one for the controller (CN `blackcloud-controller`, the telemetry
 * consumer). Issuing costs ~7 ms per certificate on the bench machine, so they are kept in `dir` (0700;
 * `devices.jsonl`, one `{id, cert, key}` line per device, 0600) and a later run issues only the ones it lacks.
 *
 * Contract of `ensureDeviceCertificates(dir, count, progress)`: resolves with the PKI directory (ca.crt,
 * broker.crt, broker.key: what Mosquitto's listener needs), the CA certificate, the controller's credentials and
 * at least `count` devices, device i with id `sessionDeviceId(i)`. The cache is bench material, never a fleet's
 * PKI: its keys are test keys.
 */
import { appendFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CONTROLLER_IDENTITY } from '../../functions/core/topics.ts';
import { ensureLocalPki, issueCertificate, loadPem, writePemFiles } from '../../functions/pki/local-ca.ts';
import type { ClientTls } from '../../test/support/mosquitto.ts';

export interface CachedDevice {
  readonly id: string;
  readonly cert: string;
  readonly key: string;
}

export interface DeviceCertificates {
  /** ca.crt, broker.crt, broker.key (Mosquitto's `tlsDir`). */
  readonly pkiDir: string;
  readonly controller: ClientTls;
  /** Device i is `sessionDeviceId(i)`; its TLS credentials with the CA. */
  readonly devices: readonly ClientTls[];
  readonly ids: readonly string[];
  /** Certificates issued by this call (0 when the cache had them all). */
  readonly issued: number;
}

export function sessionDeviceId(i: number): string {
  return `bench-session-${i}`;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

export async function ensureDeviceCertificates(
  dir: string,
  count: number,
  progress: (line: string) => void = () => undefined,
): Promise<DeviceCertificates> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const pkiDir = join(dir, 'pki');
  const pki = await ensureLocalPki(pkiDir);
  const ca = await loadPem(pki.caCert, pki.caKey);
  const controllerCert = join(pkiDir, 'controller.crt');
  const controllerKey = join(pkiDir, 'controller.key');
  if (!(await exists(controllerCert)) || !(await exists(controllerKey)) || pki.broker === 'created') {
    await writePemFiles(
      controllerCert,
      controllerKey,
      await issueCertificate(ca, { commonName: CONTROLLER_IDENTITY, kind: 'client' }),
    );
  }
  const controller = await loadPem(controllerCert, controllerKey);
  const file = join(dir, 'devices.jsonl');
  // A new CA (first run, or the cache's PKI was replaced) invalidates every cached device.
  const cached: CachedDevice[] =
    pki.broker === 'created' || !(await exists(file))
      ? []
      : (await readFile(file, 'utf8'))
          .split('\n')
          .filter((line) => line !== '')
          .map((line) => JSON.parse(line) as CachedDevice);
  if (cached.length === 0) await writeFile(file, '', { mode: 0o600 });
  const issued = Math.max(0, count - cached.length);
  const started = performance.now();
  let batch: string[] = [];
  for (let i = cached.length; i < count; i++) {
    const pem = await issueCertificate(ca, { commonName: sessionDeviceId(i), kind: 'client' });
    const device = { id: sessionDeviceId(i), cert: pem.cert, key: pem.key };
    cached.push(device);
    batch.push(`${JSON.stringify(device)}\n`);
    if (batch.length === 1000 || i === count - 1) {
      await appendFile(file, batch.join(''), { mode: 0o600 });
      batch = [];
      progress(
        `client certificates: ${i + 1} of ${count} (${((performance.now() - started) / 1000).toFixed(1)} s)`,
      );
    }
  }
  const devices = cached.slice(0, count);
  return {
    pkiDir,
    controller: { ca: ca.cert, cert: controller.cert, key: controller.key },
    devices: devices.map((device) => ({ ca: ca.cert, cert: device.cert, key: device.key })),
    ids: devices.map((device) => device.id),
    issued,
  };
}
