/**
 * Wiring of the key-rotation controller for a local data directory (`blackcloud up` and `blackcloud keys rotate`):
 * the controller's client certificate from the local CA, its mutual-TLS broker session, the devices-file store.
 *
 * Contract:
 * - `ensureControllerTls(pkiDir, ca)` returns the controller certificate (CN `blackcloud-controller`, clientAuth)
 *   and key, creating `controller.crt` / `controller.key` (0600) in the PKI directory on first use and reusing
 *   them afterwards (reissued when not signed by this CA or expiring within a day).
 * - `startKeyRotation` connects the session, builds the controller over the devices file and, unless
 *   `schedule: false`, starts its schedule, and resolves without waiting for the fleet: the first tick (which
 *   re-sends every pending offer, a bounded number at once) runs in the background; `firstTick` settles when it
 *   is done, and a failure of it is reported through `onBackgroundError` (the schedule goes on). `close()` stops
 *   the schedule and ends the session; idempotent.
 * - `controllerEndpointFile(root)` is where a running `up` records the broker address its controller uses
 *   (`controller.json`: { "url": "mqtts://..." }, or `IN_PROCESS_BROKER` for gate mode's broker, which only `up`
 *   reaches), so `blackcloud keys rotate` knows that a running `up` sends the keys.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { AuditSink, Clock, RandomSource, Timers } from '../core/interfaces.ts';
import { CONTROLLER_IDENTITY } from '../core/topics.ts';
import {
  connectControllerSession,
  type RunningControllerSession,
} from '../key-rotation/controller-session.ts';
import { type KeyRotationConfig, KeyRotationController } from '../key-rotation/key-rotation-controller.ts';
import { issueCertificate, type Pem, writePemFiles } from '../pki/local-ca.ts';
import { writeFileAtomic } from './device-file.ts';
import { DeviceFileKeyStore } from './device-file-key-store.ts';

const RENEW_BEFORE_MS = 24 * 3_600_000;

/** What `controller.json` records for the in-process broker of gate mode: no address another process could dial. */
export const IN_PROCESS_BROKER = 'in-process';

export function controllerEndpointFile(root: string): string {
  return join(root, 'controller.json');
}

export async function writeControllerEndpoint(root: string, url: string): Promise<void> {
  await writeFileAtomic(controllerEndpointFile(root), `${JSON.stringify({ url })}\n`);
}

/** Removes the record when `up` stops (a stale one would send `keys rotate` to a broker that is gone). */
export async function removeControllerEndpoint(root: string): Promise<void> {
  await rm(controllerEndpointFile(root), { force: true });
}

/** The broker URL a running `up` recorded, or undefined. */
export async function readControllerEndpoint(root: string): Promise<string | undefined> {
  try {
    const parsed = JSON.parse(await readFile(controllerEndpointFile(root), 'utf8')) as { url?: unknown };
    return typeof parsed.url === 'string' ? parsed.url : undefined;
  } catch {
    return undefined;
  }
}

function usable(pem: Pem, ca: Pem): boolean {
  try {
    const cert = new X509Certificate(pem.cert);
    const caCert = new X509Certificate(ca.cert);
    return (
      cert.checkIssued(caCert) &&
      cert.verify(caCert.publicKey) &&
      Date.parse(cert.validTo) - Date.now() > RENEW_BEFORE_MS
    );
  } catch {
    return false;
  }
}

export async function ensureControllerTls(pkiDir: string, ca: Pem): Promise<Pem> {
  const certPath = join(pkiDir, 'controller.crt');
  const keyPath = join(pkiDir, 'controller.key');
  try {
    const existing = { cert: await readFile(certPath, 'utf8'), key: await readFile(keyPath, 'utf8') };
    if (usable(existing, ca)) return existing;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const issued = await issueCertificate(ca, { commonName: CONTROLLER_IDENTITY, kind: 'client' });
  await writePemFiles(certPath, keyPath, issued);
  return issued;
}

export interface StartKeyRotationOptions {
  /** mqtts://host:port of the broker (the controller connects directly, not through the gate). */
  readonly url: string;
  /** An in-process broker's streams (gate mode; controller-session.ts `transport`), instead of dialling `url`. */
  readonly transport?: () => Duplex;
  readonly caCert: string;
  readonly tls: Pem;
  readonly servername?: string;
  readonly devicesFile: string;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly random: RandomSource;
  readonly timers: Timers;
  readonly config?: Partial<KeyRotationConfig>;
  /** After each change of the devices file (e.g. reload the receiver's directory). */
  readonly onChange?: () => Promise<void> | void;
  /** Start the schedule (rotation every period, re-sends, grace expiry). @default true */
  readonly schedule?: boolean;
  /** MQTT client id. @default 'blackcloud-controller' */
  readonly clientId?: string;
  /** The first tick failed (e.g. the devices file is being edited); the schedule tries again. */
  readonly onBackgroundError?: (error: Error) => void;
}

export interface RunningKeyRotation {
  readonly controller: KeyRotationController;
  readonly session: RunningControllerSession;
  readonly store: DeviceFileKeyStore;
  /** Settles when the first tick (pending offers re-sent) is done; never rejects. Resolved at once without a schedule. */
  readonly firstTick: Promise<void>;
  close(): Promise<void>;
}

export async function startKeyRotation(options: StartKeyRotationOptions): Promise<RunningKeyRotation> {
  let controller: KeyRotationController | undefined;
  const session = await connectControllerSession({
    connectTimeoutMs: 5000,
    url: options.url,
    ...(options.transport === undefined ? {} : { transport: options.transport }),
    ca: options.caCert,
    cert: options.tls.cert,
    key: options.tls.key,
    ...(options.servername === undefined ? {} : { servername: options.servername }),
    onMessage: (topic, payload) => controller?.handleMessage(topic, payload),
    ...(options.clientId === undefined ? {} : { clientId: options.clientId }),
  });
  const store = new DeviceFileKeyStore(options.devicesFile, {
    ...(options.onChange === undefined ? {} : { onChange: options.onChange }),
  });
  controller = new KeyRotationController({
    store,
    session,
    audit: options.audit,
    clock: options.clock,
    random: options.random,
    timers: options.timers,
    ...(options.config === undefined ? {} : { config: options.config }),
  });
  const started = controller;
  const firstTick =
    options.schedule === false
      ? Promise.resolve()
      : started.start().catch((error: unknown) => {
          options.onBackgroundError?.(error instanceof Error ? error : new Error(String(error)));
        });
  let closing: Promise<void> | undefined;
  return {
    controller: started,
    session,
    store,
    firstTick,
    close() {
      closing ??= (async () => {
        started.stop();
        await session.close();
      })();
      return closing;
    },
  };
}
