/**
 * `blackcloud keys rotate [--device ID | --all]`: rotate devices' native SPA keys now, over the broker session
 * (docs/key-lifecycle.md), with bounded concurrency and one progress line per device.
 *
 * Contract:
 * - Exactly one of `--device` / `--all`; otherwise a UsageError naming the flags.
 * - With `--broker`, this command is the controller: it opens its own mutual-TLS session, publishes the offers
 *   and confirms the acks. Without it, a running `blackcloud up` (its `<data-dir>/controller.json`) is asked to:
 *   this command records the new keys as pending in the devices file, and `up`'s controller (which watches that
 *   file) publishes the offers and confirms the acks; this command only watches the devices file for the outcome.
 * - Waits up to `--wait` seconds for each offered key to be confirmed. A device that has not acknowledged by
 *   then keeps its old key (nothing is lost: the offer is re-sent on the controller's schedule); it is reported
 *   as "awaiting ack". A failed rotation makes the command exit non-zero after the summary.
 * - Runs as the data directory's owner when no `up` runs there (data-dir-lock.ts), under the running `up` otherwise.
 * - Progress goes to stderr, one line per device; results to stdout (`--json`: one JSON line per device).
 */
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import type { AuditSink } from '../../functions/core/interfaces.ts';
import { systemClock, systemRandom, systemTimers } from '../../functions/core/system.ts';
import { CONTROLLER_IDENTITY } from '../../functions/core/topics.ts';
import {
  KeyRotationController,
  type RotateOutcome,
} from '../../functions/key-rotation/key-rotation-controller.ts';
import { type ClosableAuditSink, createAuditSink } from '../../functions/local/audit.ts';
import { type DataDirLayout, DEFAULT_DATA_DIR, dataDirLayout } from '../../functions/local/data-dir.ts';
import { withDataDirWriter } from '../../functions/local/data-dir-lock.ts';
import { DeviceFileKeyStore } from '../../functions/local/device-file-key-store.ts';
import {
  ensureControllerTls,
  readControllerEndpoint,
  startKeyRotation,
} from '../../functions/local/local-controller.ts';
import { openTrustedDataDir } from '../../functions/local/trusted-dir.ts';
import { loadPem } from '../../functions/pki/local-ca.ts';
import type { CliIo } from '../cli-io.ts';
import { UsageError } from '../usage-error.ts';

interface RotateFlags {
  readonly device?: string;
  readonly all?: boolean;
  readonly dataDir?: string;
  readonly broker?: string;
  readonly concurrency?: string;
  readonly wait?: string;
  readonly json?: boolean;
}

export type DeviceRotation =
  | RotateOutcome
  | { readonly deviceId: string; readonly status: 'confirmed'; readonly keyId: number };

function integerFlag(
  flag: string,
  text: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^[0-9]+$/.test(text) || value < min || value > max) {
    throw new UsageError(flag, `must be an integer in ${min}..${max}; received ${JSON.stringify(text)}`);
  }
  return value;
}

function describe(rotation: DeviceRotation | (RotateOutcome & { status: 'offered' | 'resent' })): string {
  switch (rotation.status) {
    case 'confirmed':
      return `${rotation.deviceId}: new key ${rotation.keyId} confirmed by the device`;
    case 'offered':
    case 'resent':
      return `${rotation.deviceId}: key ${rotation.keyId} ${rotation.status}, awaiting ack (the old key still works)`;
    case 'skipped':
      return `${rotation.deviceId}: skipped (${rotation.reason})`;
    case 'failed':
      return `${rotation.deviceId}: FAILED (${rotation.error})`;
  }
}

export async function rotateKeys(flags: RotateFlags, io: CliIo): Promise<DeviceRotation[]> {
  const layout = dataDirLayout(flags.dataDir ?? DEFAULT_DATA_DIR);
  await openTrustedDataDir(layout.root, { create: false });
  // It writes the devices file and key files: as the data directory's owner, or under its running `up`.
  return withDataDirWriter(layout, 'keys rotate', () => rotateKeysNow(flags, layout, io));
}

async function rotateKeysNow(
  flags: RotateFlags,
  layout: DataDirLayout,
  io: CliIo,
): Promise<DeviceRotation[]> {
  if ((flags.device === undefined) === (flags.all !== true)) {
    throw new UsageError(
      '--device / --all',
      'pass exactly one: --device <id> for one device, or --all for every device',
    );
  }
  const concurrency = integerFlag('--concurrency', flags.concurrency, 8, 1, 256);
  const waitMs = integerFlag('--wait', flags.wait, 30, 0, 3600) * 1000;
  const recorded = await readControllerEndpoint(layout.root);
  const url = flags.broker ?? recorded;
  if (url === undefined) {
    throw new UsageError(
      '--broker',
      `no broker given and no running "blackcloud up" recorded one in ${layout.root}/controller.json; fix: start ` +
        '"blackcloud up" or pass --broker mqtts://host:port',
    );
  }
  const audit = createAuditSink({ destination: { file: layout.auditFile } });
  const rotation =
    flags.broker === undefined
      ? deferToUp(layout.devicesFile, audit)
      : await ownSession(flags.broker, layout, audit);
  try {
    const known = (await rotation.store.list()).map((device) => device.deviceId);
    const ids = flags.all ? known : [flags.device!];
    if (!flags.all && !known.includes(flags.device!)) {
      throw new UsageError(
        '--device',
        `${JSON.stringify(flags.device)} is not in ${layout.devicesFile}; fix: check the id`,
      );
    }
    io.err(
      flags.broker === undefined
        ? `rotating ${ids.length} device(s), ${concurrency} at a time; blackcloud up (${url}) sends the keys`
        : `rotating ${ids.length} device(s), ${concurrency} at a time, via ${url}`,
    );
    const offered = await rotation.controller.rotateMany(ids, {
      concurrency,
      onProgress: (done, total, outcome) => io.err(`[${done}/${total}] ${describe(outcome)}`),
    });
    const results: DeviceRotation[] = [...offered];
    const waiting = new Map<string, number>();
    offered.forEach((outcome, index) => {
      if (outcome.status === 'offered' || outcome.status === 'resent') waiting.set(outcome.deviceId, index);
    });
    const deadline = Date.now() + waitMs;
    let confirmed = 0;
    while (waiting.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      for (const device of await rotation.store.list()) {
        const index = waiting.get(device.deviceId);
        if (index === undefined) continue;
        const keyId = (offered[index] as { keyId: number }).keyId;
        const key = device.keys.find((candidate) => candidate.keyId === keyId);
        if (key?.state === 'current') {
          waiting.delete(device.deviceId);
          confirmed += 1;
          results[index] = { deviceId: device.deviceId, status: 'confirmed', keyId };
          io.err(`[${confirmed}/${confirmed + waiting.size} acks] ${describe(results[index]!)}`);
        }
      }
    }
    for (const result of results) io.out(flags.json ? JSON.stringify(result) : describe(result));
    const count = (status: DeviceRotation['status']) =>
      results.filter((result) => result.status === status).length;
    io.err(
      `${count('confirmed')} confirmed, ${count('offered') + count('resent')} awaiting ack, ${count('skipped')} ` +
        `skipped, ${count('failed')} failed`,
    );
    const failed = results.filter((result) => result.status === 'failed');
    if (failed.length > 0) {
      throw new Error(
        `${failed.length} rotation(s) failed: ${failed.map((result) => result.deviceId).join(', ')}`,
      );
    }
    return results;
  } finally {
    await rotation.close();
    await audit.close();
  }
}

/** This command as the controller: its own mutual-TLS session to `url` (certificate from the local CA). */
async function ownSession(
  url: string,
  layout: DataDirLayout,
  audit: ClosableAuditSink,
): Promise<RotationHandle> {
  try {
    const ca = await loadPem(`${layout.pkiDir}/ca.crt`, `${layout.pkiDir}/ca.key`);
    return await startKeyRotation({
      url,
      caCert: ca.cert,
      tls: await ensureControllerTls(layout.pkiDir, ca),
      devicesFile: layout.devicesFile,
      audit,
      clock: systemClock,
      random: systemRandom,
      timers: systemTimers,
      schedule: false,
      clientId: `${CONTROLLER_IDENTITY}/keys-cli-${randomBytes(4).toString('hex')}`,
    });
  } catch (error) {
    await audit.close();
    throw new Error(
      `cannot open the controller session to ${url} (${(error as Error).message}); fix: check the broker ` +
        'address and that its CA is the one in the data directory',
      { cause: error },
    );
  }
}

/** What `rotateKeys` needs of a controller: the one it runs itself, or one that leaves publishing to `up`. */
interface RotationHandle {
  readonly controller: Pick<KeyRotationController, 'rotateMany'>;
  readonly store: DeviceFileKeyStore;
  close(): Promise<void>;
}

/**
 * A controller without a broker session: it records each new key as pending in the devices file (durably, as
 * always) and publishes nothing; `up`'s controller sees the file change and sends the offer.
 */
function deferToUp(devicesFile: string, audit: AuditSink): RotationHandle {
  const store = new DeviceFileKeyStore(devicesFile);
  const controller = new KeyRotationController({
    store,
    session: { publish: async () => undefined },
    audit,
    clock: systemClock,
    random: systemRandom,
    timers: systemTimers,
  });
  return { controller, store, close: async () => undefined };
}

export function registerKeys(program: Command, io: CliIo): void {
  const keys = program.command('keys').summary("rotate devices' SPA keys over the broker session");
  keys
    .command('rotate')
    .summary('rotate native SPA keys now (one device or all)')
    .description(
      "Generate a new native SPA key per device, publish it on the device's own key topic over the controller's " +
        'mutual-TLS broker session, and wait for the device to acknowledge it. The old key keeps working until ' +
        'the grace period after the ack ends, or the new key is first used; a device that is offline keeps its ' +
        'old key and gets the offer again later. See docs/key-lifecycle.md.',
    )
    .option('--device <id>', 'rotate this device')
    .option('--all', 'rotate every device in the directory')
    .option('--data-dir <dir>', 'data directory of "blackcloud up"', DEFAULT_DATA_DIR)
    .option('--broker <url>', 'broker for the controller session (default: the one "blackcloud up" recorded)')
    .option('--concurrency <n>', 'rotations at once (default 8)')
    .option('--wait <seconds>', 'how long to wait for acknowledgements (default 30)')
    .option('--json', 'print one JSON line per device')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  blackcloud keys rotate --device demo-device\n' +
        '  blackcloud keys rotate --all --concurrency 16 --wait 60\n' +
        '  blackcloud keys rotate --all --broker mqtts://broker.example:8883 --json',
    )
    .action(async (options: RotateFlags) => {
      await rotateKeys(options, io);
    });
}
