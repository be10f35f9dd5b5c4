/**
 * The Fleet of the local black cloud (fleet.ts): the data directory of `blackcloud up` (data-dir.ts).
 *
 * - Devices: entries of devices.yaml (edited in place, comments kept, atomic rename); a running `up` follows the
 *   file by itself. Bundle = devices/<id>/ (device.json with the SPA key, client.crt, client.key, ca.crt).
 * - Grants live in the running `up` process: listed, revoked and cut off through its control socket
 *   (functions/local/control-server.ts). Without a running `up` nothing is open (the gate dies with it and `up`
 *   removes its nftables table), which `grants()` reports as an empty list plus a note.
 * - Audit: audit.jsonl (the receiver's events) plus the operator records this fleet appends to it.
 * - `enrol` is all or nothing: files written for a device whose entry did not make it into devices.yaml are
 *   removed, and a device left 'partial' by a killed run (files, no entry) is cleaned up before it is created.
 * - Every change (enrol, enable, disable, remove) runs as the data directory's owner (data-dir-lock.ts) when no
 *   `up` runs there, so an `up` starting meanwhile waits for it, and so does another writer; under a running `up`
 *   it cooperates with it (the devices-file lock, the control socket). Changes are serialized within this process.
 */
import { open, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Pair, YAMLMap } from 'yaml';
import { isMap, isSeq, type parseDocument } from 'yaml';
import { formatAccessSpec } from '../../functions/core/access-spec.ts';
import type { Clock, Grant, RandomSource } from '../../functions/core/interfaces.ts';
import { controlSocketPath } from '../../functions/local/control-server.ts';
import { type DataDirLayout, DEFAULT_DATA_DIR, dataDirLayout } from '../../functions/local/data-dir.ts';
import { withDataDirWriter } from '../../functions/local/data-dir-lock.ts';
import {
  type ParsedDeviceEntry,
  readDeviceEntries,
  readDeviceFileDocument,
  validateDeviceDocument,
  writeFileAtomic,
} from '../../functions/local/device-file.ts';
import { withDevicesFileLock } from '../../functions/local/devices-file-lock.ts';
import { type Endpoints, readEndpoints } from '../../functions/local/endpoints.ts';
import { fwknopCommandLine, fwknoprcStanza } from '../../functions/local/fwknop-hints.ts';
import { APPEND_FLAGS } from '../../functions/local/open-flags.ts';
import { checkDeviceName, displayPath, provisionDevice } from '../../functions/local/provision-device.ts';
import { openTrustedDataDir } from '../../functions/local/trusted-dir.ts';
import { DEFAULT_HOST, DEFAULT_MQTT_PORT, DEFAULT_PLAIN_PORT } from '../../functions/local/up-config.ts';
import { ensureLocalPki, loadPem, type Pem } from '../../functions/pki/local-ca.ts';
import { DEFAULT_SPA_PORT } from '../../spa/limits.ts';
import { UsageError } from '../usage-error.ts';
import { matchesQuery, parseAuditLine } from './audit-query.ts';
import { type ControlAnswer, type ControlRequest, controlRequest } from './control-client.ts';
import {
  type AuditQuery,
  type AuditRecord,
  type CutOffResult,
  checkEnrolRequest,
  type DeviceState,
  type DeviceSummary,
  type EnrolledDevice,
  type EnrolRequest,
  type Fleet,
  FleetError,
  type FleetGrant,
  type GrantSelector,
} from './fleet.ts';
import { type OperatorAction, operatorAuditRecord } from './operator-audit.ts';

export interface LocalFleetOptions {
  readonly dataDir?: string;
  readonly random: RandomSource;
  readonly clock: Clock;
  /** Who runs the commands (`user@host`), for the audit. */
  readonly operator: string;
  /** How often `audit --follow` looks for new lines. @default 500 */
  readonly followPollMs?: number;
}

const KEY_SUFFIXES = ['bc1', 'fwknop-key', 'fwknop-hmac'] as const;
/** What follows a key file's name in its temporary files: replace-file.ts's `.tmp-<hex>`, or write-file-atomic's
 *  `.<number>` (older versions). */
const TEMPORARY_SUFFIX = /^\.(\d+|tmp-.*)$/;

/** Throws a UsageError naming --data-dir and the fix when `dir` has no devices file yet. */
export async function requireDataDir(dir: string): Promise<DataDirLayout> {
  const layout = dataDirLayout(dir);
  try {
    await stat(layout.devicesFile);
  } catch {
    throw new UsageError(
      '--data-dir',
      `${displayPath(layout.root)} has no devices file (${displayPath(layout.devicesFile)}); fix: run "blackcloud up` +
        `${dir === DEFAULT_DATA_DIR ? '' : ` --data-dir ${dir}`}" once first, or pass the data directory it uses`,
    );
  }
  await openTrustedDataDir(layout.root, { create: false });
  return layout;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

export function fleetGrant(grant: Grant): FleetGrant {
  return Object.freeze({
    deviceId: grant.deviceId,
    address: grant.address,
    access: grant.access.map(formatAccessSpec),
    openedAt: grant.openedAt,
    expiresAt: grant.expiresAt,
  });
}

export class LocalFleet implements Fleet {
  readonly backend = 'local' as const;
  readonly layout: DataDirLayout;
  readonly #o: LocalFleetOptions;
  #chain: Promise<unknown> = Promise.resolve();
  #ca: { pem: Pem; file: string } | undefined;

  private constructor(layout: DataDirLayout, options: LocalFleetOptions) {
    this.layout = layout;
    this.#o = options;
  }

  /** Opens the data directory of `blackcloud up` (UsageError when `up` never ran there). */
  static async open(options: LocalFleetOptions): Promise<LocalFleet> {
    return new LocalFleet(await requireDataDir(options.dataDir ?? DEFAULT_DATA_DIR), options);
  }

  get description(): string {
    return `data directory ${displayPath(this.layout.root)}`;
  }

  async state(deviceId: string): Promise<DeviceState> {
    checkDeviceName(deviceId);
    if ((await this.#entries()).some((entry) => entry.id === deviceId)) return 'present';
    return (await this.#leftovers(deviceId)).length > 0 ? 'partial' : 'absent';
  }

  enrol(request: EnrolRequest): Promise<EnrolledDevice> {
    return this.#exclusive('devices add', () => this.#enrolNow(request));
  }

  async list(): Promise<DeviceSummary[]> {
    return (await this.#entries()).map((entry) => this.#summary(entry));
  }

  async show(deviceId: string): Promise<DeviceSummary | undefined> {
    const entry = (await this.#entries()).find((candidate) => candidate.id === deviceId);
    return entry === undefined ? undefined : this.#summary(entry);
  }

  setEnabled(deviceId: string, enabled: boolean): Promise<CutOffResult> {
    return this.#exclusive(enabled ? 'devices enable' : 'devices disable', async () => {
      const changed = await this.#editEntry(deviceId, (_document, item) => {
        if ((item.get('enabled') ?? true) === enabled) return false;
        item.set('enabled', enabled);
        return true;
      });
      const result = enabled
        ? { changed, revoked: [], disconnected: 0, notes: [] }
        : { changed, ...(await this.#cutOff(deviceId)) };
      if (changed) {
        await this.#appendAudit(enabled ? 'device.enabled' : 'device.disabled', deviceId, result);
      }
      return result;
    });
  }

  remove(deviceId: string): Promise<CutOffResult> {
    return this.#exclusive('devices remove', async () => {
      await this.#editEntry(deviceId, (document, _item, index) => {
        const list = document.get('devices', true);
        if (isSeq(list)) list.delete(index);
        return true;
      });
      const cut = await this.#cutOff(deviceId);
      await this.#removeFiles(deviceId);
      await this.#appendAudit('device.removed', deviceId, cut);
      return { changed: true, ...cut };
    });
  }

  async grants(): Promise<FleetGrant[]> {
    const answer = await this.#control({ op: 'grants' });
    if (answer === undefined || !('grants' in answer)) return [];
    return answer.grants.map(fleetGrant);
  }

  /** True when a `blackcloud up` answers on this data directory's control socket. */
  async running(): Promise<boolean> {
    return (await this.#control({ op: 'grants' })) !== undefined;
  }

  async revokeGrants(selector: GrantSelector): Promise<FleetGrant[]> {
    const answer = await this.#control(
      'address' in selector
        ? { op: 'revoke', address: selector.address }
        : { op: 'revoke', deviceId: selector.deviceId },
    );
    if (answer === undefined || !('revoked' in answer)) return [];
    return answer.revoked.map(fleetGrant);
  }

  async *audit(query: AuditQuery): AsyncIterable<AuditRecord> {
    let offset = 0;
    let rest = '';
    for (;;) {
      const { text, size } = await this.#readAuditFrom(offset);
      offset = size;
      const lines = (rest + text).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) {
        const record = parseAuditLine(line);
        if (record !== undefined && matchesQuery(record, query)) yield record;
      }
      if (query.follow !== true) return;
      // Ctrl-C (also before the wait) ends it at once; only an abort may end it early.
      await sleep(this.#o.followPollMs ?? 500, undefined, { signal: query.signal }).catch(
        (error: unknown) => {
          if (query.signal?.aborted !== true) throw error;
        },
      );
      if (query.signal?.aborted === true) return;
    }
  }

  // ----------------------------------------------------------------------------------------------

  async #enrolNow(request: EnrolRequest): Promise<EnrolledDevice> {
    checkEnrolRequest(request);
    const { deviceId } = request;
    if ((await this.state(deviceId)) === 'partial') await this.#removeFiles(deviceId);
    const endpoints = await this.#endpoints();
    const plain = request.transport === 'plain';
    // A plain device may open the plain listener's port (the one up opened, else the default it will open).
    const brokerPort = plain ? (endpoints.plainPort ?? DEFAULT_PLAIN_PORT) : endpoints.mqttPort;
    const access = request.access ?? [{ protocol: 'tcp' as const, port: brokerPort }];
    const ca = await this.#loadCa();
    let provisioned: Awaited<ReturnType<typeof provisionDevice>>;
    try {
      provisioned = await provisionDevice({
        layout: this.layout,
        deviceId,
        format: request.format,
        ...(plain ? { transport: 'plain' as const } : {}),
        access,
        ...(request.maxOpenSeconds === undefined ? {} : { maxOpenSeconds: request.maxOpenSeconds }),
        endpoints,
        ca: ca.pem,
        caFile: ca.file,
        random: this.#o.random,
      });
    } catch (error) {
      // Nothing half-created stays behind, unless the device already existed (then it is not ours to touch).
      if ((await this.state(deviceId).catch(() => 'present')) === 'partial')
        await this.#removeFiles(deviceId);
      throw error;
    }
    let fwknop: EnrolledDevice['fwknop'];
    if (provisioned.fwknop !== undefined) {
      const hint = {
        stanza: `blackcloud-${deviceId}`,
        username: provisioned.fwknop.username,
        server: endpoints.host,
        spaPort: endpoints.spaPort,
        access,
        keyBase64: provisioned.fwknop.keyBase64,
        hmacKeyBase64: provisioned.fwknop.hmacKeyBase64,
        hmacType: provisioned.fwknop.hmacType,
      };
      const rcFile = `${this.layout.deviceDir(deviceId)}/fwknoprc`;
      const stanza = fwknoprcStanza(hint);
      try {
        await writeFileAtomic(rcFile, `${stanza}\n`);
      } catch (error) {
        await this.#editEntry(deviceId, (document, _item, index) => {
          const list = document.get('devices', true);
          if (isSeq(list)) list.delete(index);
          return true;
        }).catch(() => undefined);
        await this.#removeFiles(deviceId);
        throw error;
      }
      fwknop = { ...provisioned.fwknop, commandLine: fwknopCommandLine(hint), stanza, rcFile };
    }
    await this.#appendAudit('device.added', deviceId, {});
    return Object.freeze({
      deviceId,
      format: provisioned.format,
      ...(plain ? { transport: 'plain' as const } : {}),
      bundleDir: this.layout.deviceDir(deviceId),
      deviceFile: provisioned.deviceFile,
      keyId: provisioned.keyId,
      access,
      ...(fwknop === undefined ? {} : { fwknop }),
    });
  }

  async #endpoints(): Promise<Endpoints> {
    return (
      (await readEndpoints(this.layout)) ?? {
        host: DEFAULT_HOST,
        spaPort: DEFAULT_SPA_PORT,
        mqttPort: DEFAULT_MQTT_PORT,
      }
    );
  }

  async #loadCa(): Promise<{ pem: Pem; file: string }> {
    if (this.#ca === undefined) {
      // Only the CA is needed: the broker certificate's names are `up`'s (its listening and public addresses).
      const pki = await ensureLocalPki(this.layout.pkiDir, { keepBrokerNames: true });
      this.#ca = { pem: await loadPem(pki.caCert, pki.caKey), file: pki.caCert };
    }
    return this.#ca;
  }

  async #entries(): Promise<ParsedDeviceEntry[]> {
    const file = this.layout.devicesFile;
    return readDeviceEntries(file);
  }

  #summary(entry: ParsedDeviceEntry): DeviceSummary {
    return Object.freeze({
      id: entry.id,
      enabled: entry.enabled,
      allowedAccess: [...entry.allowedAccess],
      formats: entry.fwknop === undefined ? (['native'] as const) : (['native', 'fwknop'] as const),
      maxOpenSeconds: entry.maxOpenSeconds,
      keyIds: entry.nativeKeys.map((key) => key.keyId),
      bundleDir: this.layout.deviceDir(entry.id),
    });
  }

  /**
   * Edits the entry of `deviceId` in devices.yaml (comments kept), validates, and replaces the file atomically,
   * holding the devices-file lock (the key-rotation controller writes the same file).
   * `edit` returns false when nothing changed (the file is then left alone). Unknown id → FleetError.
   */
  async #editEntry(
    deviceId: string,
    edit: (document: ReturnType<typeof parseDocument>, item: YAMLMap, index: number) => boolean,
  ): Promise<boolean> {
    const file = this.layout.devicesFile;
    return withDevicesFileLock(file, async () => {
      const document = await readDeviceFileDocument(file);
      validateDeviceDocument(file, document.toJS());
      const list = document.get('devices', true);
      const items = isSeq(list) ? (list.items as unknown[]) : [];
      const index = items.findIndex((item) => isMap(item) && item.get('id') === deviceId);
      if (index < 0) {
        throw new FleetError(
          `device ${JSON.stringify(deviceId)} is not in ${displayPath(file)}; fix: check the id with "blackcloud devices list"`,
        );
      }
      if (!edit(document, items[index] as YAMLMap<unknown, unknown> & { items: Pair[] }, index)) return false;
      validateDeviceDocument(file, document.toJS());
      await writeFileAtomic(file, document.toString());
      return true;
    });
  }

  /** Asks a running `up` to apply the file now and close the device's grants and sessions. */
  async #cutOff(deviceId: string): Promise<Omit<CutOffResult, 'changed'>> {
    const answer = await this.#control({ op: 'cut-off', deviceIds: [deviceId] });
    if (answer === undefined) {
      return {
        revoked: [],
        disconnected: 0,
        notes: ['blackcloud up is not running here: nothing was open; the change applies when it starts'],
      };
    }
    const revoked = 'revoked' in answer ? answer.revoked.map(fleetGrant) : [];
    const disconnected = 'disconnected' in answer ? answer.disconnected : undefined;
    const dynsec = 'brokerCutOff' in answer && answer.brokerCutOff === 'dynsec';
    return {
      revoked,
      disconnected,
      notes:
        disconnected !== undefined
          ? []
          : dynsec
            ? [
                "the external broker's dynamic security closed this device's MQTT sessions and gives it no access",
              ]
            : [
                'blackcloud up fronts an external broker: close the MQTT sessions of this device at that broker',
              ],
    };
  }

  #control(request: ControlRequest): Promise<ControlAnswer | undefined> {
    return controlRequest(controlSocketPath(this.layout.root), request);
  }

  /**
   * Files of a device without a directory entry: its bundle folder and its key files, the rotated ones
   * (`keys/<id>.<keyId>.bc1`, functions/local/device-file-key-store.ts) included, and the temporary files of an
   * atomic write interrupted by a kill (`keys/<id>.bc1.tmp-<hex>`, functions/local/replace-file.ts; older versions
   * left `keys/<id>.bc1.<number>`). Ids may contain dots, so `<id>.<n>.bc1` that is the key file of another
   * device `<id>.<n>` still in the directory is never taken.
   */
  async #leftovers(deviceId: string): Promise<string[]> {
    checkDeviceName(deviceId); // never build a path from an unchecked name
    const found: string[] = [];
    if (await exists(this.layout.deviceDir(deviceId))) found.push(this.layout.deviceDir(deviceId));
    const names = await readdir(this.layout.keysDir).catch(() => [] as string[]);
    const others = new Set((await this.#entries().catch(() => [])).map((entry) => entry.id));
    const rotated = new RegExp(`^${deviceId.replaceAll('.', '\\.')}\\.(\\d{1,10})\\.bc1`);
    for (const name of names) {
      const rotation = rotated.exec(name);
      const bases = KEY_SUFFIXES.map((suffix) => `${deviceId}.${suffix}`);
      if (rotation !== null && !others.has(`${deviceId}.${rotation[1]}`)) {
        bases.push(rotation[0]);
      }
      for (const base of bases) {
        if (name === base || (name.startsWith(base) && TEMPORARY_SUFFIX.test(name.slice(base.length)))) {
          found.push(join(this.layout.keysDir, name));
          break;
        }
      }
    }
    return found;
  }

  async #removeFiles(deviceId: string): Promise<void> {
    for (const path of await this.#leftovers(deviceId)) await rm(path, { recursive: true, force: true });
  }

  async #appendAudit(
    type: OperatorAction,
    deviceId: string,
    result: { revoked?: readonly FleetGrant[]; disconnected?: number | undefined },
  ): Promise<void> {
    const record = operatorAuditRecord({
      type,
      time: this.#o.clock.now(),
      deviceId,
      operator: this.#o.operator,
      ...(result.revoked === undefined ? {} : { revokedGrants: result.revoked.length }),
      ...(result.disconnected === undefined ? {} : { disconnected: result.disconnected }),
    });
    const handle = await open(this.layout.auditFile, APPEND_FLAGS, 0o600);
    try {
      await handle.write(`${JSON.stringify(record)}\n`);
    } finally {
      await handle.close();
    }
  }

  async #readAuditFrom(offset: number): Promise<{ text: string; size: number }> {
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      handle = await open(this.layout.auditFile, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { text: '', size: 0 };
      throw error;
    }
    try {
      const { size } = await handle.stat();
      const start = size < offset ? 0 : offset; // truncated: start over
      const length = size - start;
      if (length === 0) return { text: '', size };
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, start);
      return { text: buffer.toString('utf8'), size };
    } finally {
      await handle.close();
    }
  }

  /** One change at a time in this process, as the data directory's owner or under its running `up`. */
  #exclusive<T>(command: string, change: () => Promise<T>): Promise<T> {
    const operation = () => withDataDirWriter(this.layout, command, change);
    const run = this.#chain.then(operation, operation);
    this.#chain = run.catch(() => undefined);
    return run;
  }
}
