/**
 * The local black cloud in one process (`blackcloud up`, docs/local.md): the same receiver code as on AWS, with
 * local adapters.
 *
 *   device ──UDP knock──▶ receiver (host:spaPort) ──grant──▶ firewall ──▶ broker
 *   firewall = gate:     userspace TCP gate on host:mqttPort → embedded broker in this process, no listening socket
 *                        (the gate hands it each granted connection; or --broker, piped over TCP)
 *   firewall = nftables: kernel table guarding tcp/mqttPort → embedded broker on host:mqttPort (or --broker's port)
 *
 * Contract:
 * - `startLocalCloud` prepares the data directory (0700; data-dir.ts lists its files), the PKI (a broker
 *   certificate whose SANs are loopback, the listening host and every public address; reissued under the same CA
 *   when that set changes, which `onNote` reports), and on first run (no devices file yet) the demo device; then
 *   starts, in order, the broker, the firewall and the receiver, and finally records the endpoints and the public
 *   addresses in force (public-address.ts) and points every device file in the data directory at them, except
 *   fields edited by hand (endpoints.ts); `onNote` says which files it updated and which it left.
 * - Before it writes anything in the data directory (PKI, device files, nonces.log, control.sock) it owns the
 *   directory (data-dir-lock.ts): a data directory used by another `up` is refused with `DataDirBusyError` naming
 *   that one's pid and ports; the lock of a dead `up` is taken over. The owner record gets the real endpoints once
 *   they are known; the lock is released last, after everything else closed.
 * - A failure at any step stops what was already started and throws a typed error (a busy port is
 *   `PortInUseError` naming the flag to change).
 * - `hooks.signal` aborted, at any point of the start or later, closes at once whatever was opened so far (a start
 *   in flight is closed as soon as it completes); a start so interrupted rejects with `LocalCloudStoppedError`.
 * - `close()` stops the receiver, revokes every grant, closes the firewall (removes the nftables table), the
 *   broker, the nonce store and the audit file, in that order, then releases the data directory; each step runs
 *   even when an earlier one fails (cleanup-stack.ts). Idempotent. `lost` resolves (and the cloud closes itself)
 *   when the data directory's lock was removed or taken over under it.
 * - A device disabled in the devices file while `up` runs loses its embedded-broker sessions at the reload, and
 *   the broker refuses new sessions of identities that are not enabled devices, and certificates other than the
 *   one the directory records for the device (`certificateSerial`, so a reused name does not revive a removed
 *   device's certificate).
 * - While it runs, `<data-dir>/control.sock` (control-server.ts) lets the fleet commands list and revoke grants
 *   and cut off a disabled or removed device at once; a reload that disables a device also revokes its grants.
 * - With `config.prefilter`, once the receiver is bound, the kernel pre-filter of its port (spa-prefilter.ts,
 *   table `<nftTable>_spa`) drops in the kernel the datagrams that cannot be a knock; it is removed before the
 *   receiver closes. Where it cannot be installed (no root, no nft, a kernel without it), `onNote` says so and the
 *   receiver screens every datagram itself, as without it.
 * - Closed on connect (docs/scaling.md): with the embedded broker, a device's claim on its grant is released as soon
 *   as the broker accepted its MQTT session (`onSession`; behind the gate the broker serves the gate's accepted
 *   connection itself, so its peer is the device's address); the rule closes once no device that knocked for that address still waits.
 *   With an external broker (`--broker`) whose dynamic security answers, the signal is Mosquitto's connection log
 *   (`watchBrokerSessions`: the admin session reads `$SYS/broker/log/N`, mosquitto-session-watcher.ts); the log's
 *   peer is the gate's upstream leg, mapped back to the device's address by the gate (`originOf`), or the device's
 *   own address behind nftables. Without dynamic security (or when the broker refuses the log) grants live for
 *   their window, and `onNote` says so.
 * - The plain profile (docs/threat-model.md "The plain profile", docs/local.md "Devices that cannot do TLS"), only
 *   with `config.plainPort`: a second public port, dark exactly like the TLS one (its own gate, or one more port of
 *   the nftables table), in front of the embedded broker's plain connections or `--broker-plain`. A BC1 knock of a
 *   plain device makes its one-time credential live (plain-credential-keeper.ts) before its grant opens; the
 *   embedded broker accepts a plain CONNECT only as an enabled plain device, from the address that knocked, with
 *   that live credential, which it consumes. Every grant closing (the firewall's revoke) kills the credentials of
 *   its address. With `--broker-plain` the credential is the device client's dynsec password (broker-dynsec.ts).
 * - Replay ids are kept in `nonces.log` (file-backed store), so a restart does not reopen replays.
 * - The receiver also acts as key-rotation controller (docs/key-lifecycle.md): a privileged session to the broker
 *   (certificate `pki/controller.crt`), rotation on schedule, first use of a new key noted after each knock. If
 *   that session cannot be opened (e.g. an external broker with another CA), `up` runs without rotation and
 *   says so through `onNote`.
 * - With `--broker`, when that broker answers on the dynamic-security topics (broker-dynsec.ts), its clients and
 *   roles follow the devices file: every reload syncs them, and a `cut-off` request waits for that sync, so a
 *   disabled or removed device's sessions at the external broker close too; otherwise `onNote` says it is off.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  BrokerListenError,
  type BrokerSession,
  type EmbeddedBroker,
  type InProcessBroker,
  type PlainLogin,
  startEmbeddedBroker,
  startInProcessBroker,
} from '../broker/embedded-broker.ts';
import { MOSQUITTO_NOTICE_LOG_TOPIC } from '../broker/mosquitto-session-log.ts';
import { watchMosquittoSessions } from '../broker/mosquitto-session-watcher.ts';
import { formatAccessSpec } from '../core/access-spec.ts';
import type {
  AuditEvent,
  AuditSink,
  Clock,
  Firewall,
  RandomSource,
  RemoteEndpoint,
} from '../core/interfaces.ts';
import { canonicalAddress } from '../core/ip-address.ts';
import { encodeSessionNotice, sessionNoticeTopic } from '../core/session-notice.ts';
import { systemClock, systemRandom, systemTimers } from '../core/system.ts';
import { CONTROLLER_IDENTITY } from '../core/topics.ts';
import { transportOf } from '../core/transport.ts';
import type { KeyRotationConfig } from '../key-rotation/key-rotation-controller.ts';
import { ensureLocalPki, loadPem } from '../pki/local-ca.ts';
import { UdpPortInUseError } from '../receiver/errors.ts';
import type { Outcome } from '../receiver/handle-datagram.ts';
import {
  type CredentialInstaller,
  closingCredentials,
  inBookOnly,
  PlainCredentialKeeper,
} from '../receiver/plain-credential-keeper.ts';
import { startReaderWorkers } from '../receiver/reader-workers.ts';
import { createReceiverDeps, type WiredReceiverDeps } from '../receiver/receiver-deps.ts';
import { sessionSignalHandler } from '../receiver/session-signal.ts';
import { type RunningReceiver, startReceiver } from '../receiver/udp-receiver.ts';
import { createAuditSink } from './audit.ts';
import { type BrokerDynsec, startBrokerDynsec, writeBrokerFiles } from './broker-dynsec.ts';
import { CleanupStack } from './cleanup-stack.ts';
import { controlSocketPath, startControlServer } from './control-server.ts';
import { CutOffTracker } from './cut-off.ts';
import { type DataDirLayout, DEMO_DEVICE_ID, dataDirLayout } from './data-dir.ts';
import { acquireDataDir, describeOwner } from './data-dir-lock.ts';
import { normaliseSerial, writeDeviceFile } from './device-file.ts';
import {
  type Endpoints,
  mqttUrl,
  plainMqttUrl,
  readEndpoints,
  refreshDeviceEndpoints,
  writeEndpoints,
} from './endpoints.ts';
import { FileNonceStore } from './file-nonce-store.ts';
import { fanOutFirewall } from './firewall-fanout.ts';
import { type GateEvent, GateListenError, startGateFirewall } from './gate-firewall.ts';
import {
  ensureControllerTls,
  IN_PROCESS_BROKER,
  type RunningKeyRotation,
  removeControllerEndpoint,
  startKeyRotation,
  writeControllerEndpoint,
} from './local-controller.ts';
import { LocalCloudStoppedError, PortInUseError } from './local-errors.ts';
import { startNftablesFirewall } from './nftables-firewall.ts';
import { displayPath, type ProvisionedDevice, provisionDevice } from './provision-device.ts';
import { brokerNames, savePublicAddresses } from './public-address.ts';
import { prefilterTableName, type SpaPrefilter, startSpaPrefilter } from './spa-prefilter.ts';
import { openTrustedDataDir } from './trusted-dir.ts';
import type { UpConfig } from './up-config.ts';
import { WatchedDeviceDirectory } from './watched-directory.ts';

export interface LocalCloudHooks {
  /** Every audit event (also written to audit.jsonl). */
  readonly onAudit?: (event: AuditEvent) => void;
  /** Every datagram's outcome. */
  readonly onOutcome?: (outcome: Outcome, remote: RemoteEndpoint) => void;
  readonly onGateEvent?: (event: GateEvent) => void;
  /** Operational notes (directory reloaded, a device file skipped, ...). */
  readonly onNote?: (line: string) => void;
  /** @default systemClock */
  readonly clock?: Clock;
  /** @default systemRandom */
  readonly random?: RandomSource;
  /** Key rotation timers (docs/key-lifecycle.md), over `config.keyRotationHours`; `false` = no controller. */
  readonly keyRotation?: Partial<KeyRotationConfig> | false;
  /** Stops the start-up at once (then `LocalCloudStoppedError`) or, once started, the cloud. */
  readonly signal?: AbortSignal;
}

export interface LocalCloud {
  readonly layout: DataDirLayout;
  readonly config: UpConfig;
  readonly spa: { readonly host: string; readonly port: number };
  /** The public MQTT endpoint devices dial (gate, or the guarded broker port). */
  readonly mqtt: { readonly host: string; readonly port: number; readonly url: string };
  /** The plain profile's public endpoint (`config.plainPort`), dark like `mqtt`. */
  readonly plain?: { readonly host: string; readonly port: number; readonly url: string };
  /** The plain profile's live credentials (present with `plain`). */
  readonly credentials?: PlainCredentialKeeper;
  /** Where the broker itself listens; behind the gate the embedded broker is in process, with no socket at all. */
  readonly broker:
    | { readonly host: string; readonly port: number; readonly embedded: boolean; readonly inProcess: false }
    | { readonly embedded: true; readonly inProcess: true };
  readonly endpoints: Endpoints;
  /** The demo device created on this run (first run only). */
  readonly demoDevice?: ProvisionedDevice;
  readonly directory: WatchedDeviceDirectory;
  readonly deps: WiredReceiverDeps;
  /** The key-rotation controller, when its broker session could be opened. */
  readonly keyRotation?: RunningKeyRotation;
  /** The kernel pre-filter of the SPA port, when it is installed. */
  readonly prefilter?: SpaPrefilter;
  counters(): Record<string, number>;
  /** Resolves with the reason when the cloud closes by itself (its data directory's lock was lost). */
  readonly lost: Promise<string>;
  close(): Promise<void>;
}

/**
 * Closed on connect and the plain profile's session hold at an external Mosquitto (the contract above): its notice
 * log, read by the admin session, reaches the grant manager and the credential keeper with the device's address.
 * A connect whose peer is not one of the firewall's device connections (a local client straight to the broker) is
 * ignored: only a device behind the firewall can hold a claim.
 */
function watchBrokerSessions(
  dynsec: BrokerDynsec,
  deps: WiredReceiverDeps,
  keeper: PlainCredentialKeeper | undefined,
  deviceAddressOf: (peer: { address: string; port: number }) => string | undefined,
  note: (line: string) => void,
): void {
  const onEvent = sessionSignalHandler({
    grants: deps.grants,
    ...(keeper === undefined ? {} : { keeper }),
    onError: (deviceId, error) => note(`closed on connect for ${deviceId} failed: ${error.message}`),
  });
  void watchMosquittoSessions({
    subscriber: dynsec,
    ensureAccess: () => dynsec.grantLogAccess(),
    onEvent: (event) => {
      if (event.kind === 'disconnected') return onEvent(event);
      const address = deviceAddressOf(event);
      if (address !== undefined) onEvent({ ...event, address });
    },
    onError: (error) => note(`broker session signal: ${error.message}`),
  }).then((granted) =>
    note(
      granted
        ? `broker session signal: watching ${MOSQUITTO_NOTICE_LOG_TOPIC} (a rule closes once its devices connected)`
        : `broker session signal: the broker refused ${MOSQUITTO_NOTICE_LOG_TOPIC}: grants live for their window`,
    ),
  );
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function tee(file: AuditSink, onAudit: ((event: AuditEvent) => void) | undefined): AuditSink {
  return {
    write(event) {
      file.write(event);
      try {
        onAudit?.(event);
      } catch {
        // A console problem must not affect the receiver.
      }
    },
  };
}

export async function startLocalCloud(config: UpConfig, hooks: LocalCloudHooks = {}): Promise<LocalCloud> {
  const clock = hooks.clock ?? systemClock;
  const random = hooks.random ?? systemRandom;
  const note = hooks.onNote ?? (() => undefined);
  const layout = dataDirLayout(config.dataDir);
  const { signal } = hooks;
  const cleanup = new CleanupStack();
  /** After each step of the start: an abort that came meanwhile ends the start (what it opened is closing). */
  const live = () => {
    if (signal?.aborted === true) throw new LocalCloudStoppedError(String(signal.reason));
  };
  signal?.addEventListener('abort', () => void cleanup.close().catch(() => undefined), { once: true });
  let reportLost: (reason: string) => void = () => undefined;
  const lost = new Promise<string>((resolve) => {
    reportLost = resolve;
  });
  /** Set once the directory is loaded; the broker refuses identities that are not enabled devices. */
  const directoryRef: { current?: WatchedDeviceDirectory } = {};
  /** Set once the receiver is wired: a reload that disables a device also revokes its grants. */
  const cutOffsRef: { current?: CutOffTracker } = {};
  /** Set once an external broker's dynamic security answered: it follows every reload. */
  const dynsecRef: { current?: BrokerDynsec } = {};
  /** Set once the receiver is wired: the broker accepted a device's session (closed on connect). */
  const sessionRef: { current?: (session: BrokerSession) => void } = {};

  try {
    live();
    await openTrustedDataDir(layout.root, { create: true });
    const owner = await acquireDataDir(
      layout,
      {
        spa: { host: config.host, port: config.spaPort },
        mqtt: { host: config.host, port: config.mqttPort },
      },
      {
        onTakeOver: (stale) => note(`took over the data directory from ${describeOwner(stale)}: not running`),
        onLost: (error) => {
          const reason = `the lock of data directory ${layout.root} was lost (${error.message}): stopping`;
          note(reason);
          reportLost(reason);
          void cleanup.close().catch(() => undefined);
        },
      },
    );
    cleanup.defer(() => owner.release());
    live();
    const previousEndpoints = await readEndpoints(layout);
    const wildcardHost = config.host === '0.0.0.0' || config.host === '::';
    const names = brokerNames([...(wildcardHost ? [] : [config.host]), ...config.publicAddresses]);
    const pki = await ensureLocalPki(layout.pkiDir, {
      extraDnsNames: names.dnsNames,
      extraIpAddresses: names.ipAddresses,
    });
    if (pki.broker === 'reissued') {
      note(
        `broker certificate reissued by the same CA for ${[...names.dnsNames, ...names.ipAddresses].join(', ') || 'loopback only'} ` +
          '(plus localhost, 127.0.0.1, ::1); device certificates and ca.crt stay valid',
      );
    }
    const tls = await loadPem(pki.brokerCert, pki.brokerKey);
    const ca = await loadPem(pki.caCert, pki.caKey);
    const firstRun = !(await exists(layout.devicesFile));
    live();

    // The plain profile's credentials: the embedded broker asks the book; Mosquitto gets each as a dynsec password.
    const plainOn = config.plainPort !== undefined;
    const installer: CredentialInstaller = {
      install: (id, credential) => (dynsecRef.current?.credentials ?? inBookOnly).install(id, credential),
      withdraw: (id, reason) => (dynsecRef.current?.credentials ?? inBookOnly).withdraw(id, reason),
    };
    const keeper = plainOn
      ? new PlainCredentialKeeper({
          installer,
          clock,
          timers: systemTimers,
          onError: (id, error) =>
            note(
              `plain profile: the broker did not take device ${id}'s credential change (${error.message})`,
            ),
        })
      : undefined;
    if (keeper !== undefined) cleanup.defer(() => keeper.close());

    // Broker: embedded (in process behind the gate, public behind nftables) or external.
    let broker: InProcessBroker | undefined;
    /** Where the broker listens; undefined for the in-process broker behind the gate (no listening socket). */
    let brokerAddress: { host: string; port: number } | undefined;
    const brokerOptions = {
      tls: { key: tls.key, cert: tls.cert, ca: ca.cert },
      // An enabled device, with this enrolment's certificate when the directory records its serial.
      authenticate: ({ identity, serial }: { identity: string; serial: string }) => {
        if (identity === CONTROLLER_IDENTITY) return true;
        const device = directoryRef.current?.byId(identity);
        if (device?.enabled !== true) return false;
        return device.certificateSerial === undefined || device.certificateSerial === normaliseSerial(serial);
      },
      onSession: (session: BrokerSession) => sessionRef.current?.(session),
      // The plain profile: an enabled plain device, from the address that knocked, with its live credential.
      ...(keeper === undefined
        ? {}
        : {
            plain: {
              ...(config.firewall === 'nftables' && config.broker === undefined
                ? { port: config.plainPort! }
                : {}),
              authenticate: ({ username, password, remoteAddress }: PlainLogin) => {
                const device = directoryRef.current?.byId(username);
                if (device?.enabled !== true || transportOf(device) !== 'plain') return false;
                const address = canonicalAddress(remoteAddress);
                if (address === undefined) return false;
                return keeper.consume(username, password, address) === 'accepted';
              },
            },
          }),
    };
    if (config.broker !== undefined) {
      brokerAddress = { host: config.broker.host, port: config.broker.port };
    } else if (config.firewall === 'gate') {
      broker = await startInProcessBroker(brokerOptions);
      const started = broker;
      cleanup.defer(() => started.close());
      live();
    } else {
      const listen = { host: config.host, port: config.mqttPort };
      let listening: EmbeddedBroker;
      try {
        listening = await startEmbeddedBroker({ ...listen, ...brokerOptions });
      } catch (error) {
        if (error instanceof BrokerListenError && error.code === 'EADDRINUSE') {
          const plainPort = error.port !== listen.port;
          throw new PortInUseError(
            'tcp',
            listen.host,
            plainPort ? error.port : listen.port,
            plainPort ? '--plain-port' : '--mqtt-port',
            { cause: error },
          );
        }
        throw error;
      }
      broker = listening;
      cleanup.defer(() => listening.close());
      live();
      brokerAddress = listening.address();
    }

    // Firewall in front of it (and of the plain listener, when on).
    let firewall: Firewall & { close(): Promise<void> };
    let publicPort: number;
    let plainPublicPort: number | undefined;
    /** The device address behind the broker's peer: the gate maps its upstream leg, nftables passes it through. */
    let deviceAddressOf: (peer: { address: string; port: number }) => string | undefined;
    if (config.firewall === 'gate') {
      const startGate = async (
        port: number,
        flag: string,
        upstream: Parameters<typeof startGateFirewall>[0]['upstream'],
      ) => {
        try {
          return await startGateFirewall({
            listen: { host: config.host, port },
            upstream,
            clock,
            ...(hooks.onGateEvent === undefined ? {} : { onEvent: hooks.onGateEvent }),
          });
        } catch (error) {
          if (error instanceof GateListenError && error.code === 'EADDRINUSE') {
            throw new PortInUseError('tcp', config.host, port, flag, { cause: error });
          }
          throw error;
        }
      };
      const gate = await startGate(
        config.mqttPort,
        '--mqtt-port',
        brokerAddress ?? { handoff: (socket) => (broker as InProcessBroker).accept(socket) },
      );
      publicPort = gate.address().port;
      firewall = gate;
      deviceAddressOf = ({ address, port }) => gate.originOf(address, port);
      if (config.plainPort !== undefined) {
        let plainGate: Awaited<ReturnType<typeof startGate>>;
        try {
          plainGate = await startGate(
            config.plainPort,
            '--plain-port',
            config.brokerPlain ?? { handoff: (socket) => (broker as InProcessBroker).acceptPlain(socket) },
          );
        } catch (error) {
          await gate.close();
          throw error;
        }
        plainPublicPort = plainGate.address().port;
        firewall = fanOutFirewall([gate, plainGate]);
        deviceAddressOf = ({ address, port }) =>
          gate.originOf(address, port) ?? plainGate.originOf(address, port);
      }
    } else {
      publicPort = config.broker?.port ?? (brokerAddress as { port: number }).port;
      plainPublicPort =
        config.plainPort === undefined
          ? undefined
          : (config.brokerPlain?.port ?? (broker as EmbeddedBroker).plainAddress()?.port);
      deviceAddressOf = ({ address }) => canonicalAddress(address);
      firewall = await startNftablesFirewall({
        table: config.nftTable,
        ports: [
          { protocol: 'tcp', port: publicPort },
          ...(plainPublicPort === undefined ? [] : [{ protocol: 'tcp' as const, port: plainPublicPort }]),
        ],
        clock,
        onSessionEvent: (event) =>
          note(
            event.type === 'restarted'
              ? `nftables: the nft session was restarted (${event.reason}; restart ${event.restarts})`
              : `nftables: the nft session gave up after ${event.restarts} restarts (${event.reason}); grants now run nft once per batch`,
          ),
      });
    }
    // Every grant closing kills the plain credentials of its address (a credential never outlives its grant).
    if (keeper !== undefined) firewall = closingCredentials(firewall, keeper);
    const startedFirewall = firewall;
    cleanup.defer(() => startedFirewall.close());
    live();

    // Devices: the demo device on first run (after the public port is known: its access names it).
    let demoDevice: ProvisionedDevice | undefined;
    const provisional: Endpoints = {
      host: config.advertisedHost,
      spaPort: config.spaPort,
      mqttPort: publicPort,
      ...(plainPublicPort === undefined ? {} : { plainPort: plainPublicPort }),
    };
    if (firstRun) {
      if (config.demoDevice) {
        demoDevice = await provisionDevice({
          layout,
          deviceId: DEMO_DEVICE_ID,
          format: 'native',
          access: [{ protocol: 'tcp', port: publicPort }],
          endpoints: provisional,
          ca,
          caFile: pki.caCert,
          random,
        });
      } else {
        await writeDeviceFile(layout.devicesFile, []);
      }
    }
    const rotationRef: { current?: RunningKeyRotation } = {};
    const devicesChangedRef: { current?: () => void } = {};
    const directory = await WatchedDeviceDirectory.open(layout.devicesFile, {
      onReload: (devices) => {
        note(`device directory reloaded: ${devices.length} device(s)`);
        // Keys another process (blackcloud keys rotate) recorded as pending are offered now, not at the next tick.
        rotationRef.current?.controller.tickSoon();
        // Reader threads authenticate against a snapshot: they get the new devices now.
        devicesChangedRef.current?.();
        void dynsecRef.current?.sync();
        // A disabled device loses its broker sessions and its grants: closing the firewall does not cut an
        // established session (docs/operations-aws.md).
        const enabled = new Set(devices.filter((device) => device.enabled).map((device) => device.id));
        const cutOff = new Set(devices.filter((device) => !device.enabled).map((device) => device.id));
        for (const grant of cutOffsRef.current === undefined ? [] : deps.grants.active()) {
          if (!enabled.has(grant.deviceId)) cutOff.add(grant.deviceId);
        }
        for (const id of cutOff) keeper?.invalidate(id);
        void cutOffsRef.current?.cutOff(cutOff);
      },
      onReloadError: (error) =>
        note(`device directory not reloaded (previous devices stay in force): ${error.message}`),
    });
    directoryRef.current = directory;
    cleanup.defer(() => directory.close());
    live();
    for (const device of directory.devices()) {
      const plainDevice = transportOf(device) === 'plain';
      if (plainDevice && plainPublicPort === undefined) {
        note(
          `device ${device.id} is a plain-profile device but up has no plain listener: it cannot log in ` +
            '(fix: start up with --plain-port 1883; docs/local.md "Devices that cannot do TLS")',
        );
        continue;
      }
      const port = plainDevice ? plainPublicPort : publicPort;
      if (!device.allowedAccess.some((entry) => entry.protocol === 'tcp' && entry.port === port)) {
        note(
          `device ${device.id} may open ${device.allowedAccess.map(formatAccessSpec).join(',')} but the broker ` +
            `port is tcp/${port}: its knocks will not open the broker (edit allowedAccess in ${layout.devicesFile})`,
        );
      }
    }

    // Receiver.
    // A data directory with devices but no nonce file lost its replay records: refuse, for one clock window, the
    // stamps a previous run could have accepted (file-nonce-store.ts, start-time guard).
    const nonces = await FileNonceStore.open({
      path: layout.nonceFile,
      clock,
      guardMs: firstRun ? 0 : config.clockWindowMs,
    });
    cleanup.defer(() => nonces.close());
    live();
    const auditFile = createAuditSink({ destination: { file: layout.auditFile } });
    cleanup.defer(() => auditFile.close());
    const deps = createReceiverDeps({
      directory,
      nonces,
      firewall,
      audit: tee(auditFile, hooks.onAudit),
      clock,
      config: { clockWindowMs: config.clockWindowMs, defaultGrantSeconds: config.grantSeconds },
      deviceBounds: { maxAddressesPerDevice: config.maxAddressesPerDevice },
      ...(keeper === undefined ? {} : { connectCredentials: keeper }),
    });
    cleanup.defer(() => deps.grants.close());
    sessionRef.current = (session) => {
      if (session.identity === CONTROLLER_IDENTITY) return;
      // The broker's peer is the device's address: behind the gate it serves the gate's accepted connection.
      const address = canonicalAddress(session.remoteAddress);
      if (address !== undefined) void deps.grants.sessionEstablished(session.identity, address);
    };
    cutOffsRef.current = new CutOffTracker({
      grants: deps.grants,
      disconnect: (id) => {
        // The device learns why (session-notice.ts): removed when the directory no longer has it, else disabled.
        const reason = directoryRef.current?.byId(id) === undefined ? 'removed' : 'disabled';
        const notice = { topic: sessionNoticeTopic(id), payload: encodeSessionNotice(reason) };
        const closed = broker?.disconnect(id, notice) ?? 0;
        if (closed > 0)
          note(`device ${id} is not an enabled device any more: its broker sessions were closed`);
        return closed;
      },
    });
    let receiver: RunningReceiver;
    let keyRotation: RunningKeyRotation | undefined;
    try {
      const receiverOptions = {
        host: config.host,
        port: config.spaPort,
        deps,
        onOutcome: (outcome: Outcome, remote: RemoteEndpoint) => {
          if (outcome.ok && outcome.value.keyId !== undefined) {
            void keyRotation?.controller.noteKeyUsed(outcome.value.deviceId, outcome.value.keyId);
          }
          hooks.onOutcome?.(outcome, remote);
        },
      };
      // More than one reader: worker threads authenticate in parallel, this thread decides (reader-workers.ts).
      if (config.readers > 1) {
        const workers = await startReaderWorkers({
          ...receiverOptions,
          readers: config.readers,
          devices: () => directory.devices(),
        });
        devicesChangedRef.current = () => workers.devicesChanged();
        receiver = workers;
      } else {
        receiver = await startReceiver(receiverOptions);
      }
    } catch (error) {
      if (error instanceof UdpPortInUseError) {
        throw new PortInUseError('udp', config.host, config.spaPort, '--spa-port', { cause: error });
      }
      throw error;
    }
    const startedReceiver = receiver;
    cleanup.defer(() => startedReceiver.close());
    live();
    let prefilter: SpaPrefilter | undefined;
    if (config.prefilter) {
      try {
        prefilter = await startSpaPrefilter({
          table: prefilterTableName(config.nftTable),
          port: receiver.address.port,
          host: config.host,
          onNote: note,
        });
        const installed = prefilter;
        cleanup.defer(() => installed.close());
      } catch (error) {
        note(
          `kernel pre-filter off (${(error as Error).message}); the receiver screens every datagram itself`,
        );
      }
      live();
    }
    const control = await startControlServer(
      controlSocketPath(layout.root),
      {
        grants: deps.grants,
        reloadDevices: () => directory.reload(),
        isEnabled: (id) => directory.byId(id)?.enabled === true,
        brokerEmbedded: broker !== undefined,
        brokerControl: () => dynsecRef.current?.sync() ?? Promise.resolve(false),
        cutOffs: cutOffsRef.current,
      },
      note,
    );
    if (control !== undefined) cleanup.defer(() => control.close());
    live();

    // The receiver as key-rotation controller: a direct session to the broker (never through the gate; in process
    // for the gate's in-process broker).
    if (hooks.keyRotation !== false) {
      const wildcard = brokerAddress?.host === '0.0.0.0' || brokerAddress?.host === '::';
      const controllerHost = wildcard ? '127.0.0.1' : brokerAddress?.host;
      const inProcess = brokerAddress === undefined ? (broker as InProcessBroker) : undefined;
      const controllerUrl =
        brokerAddress === undefined
          ? IN_PROCESS_BROKER
          : mqttUrl(controllerHost ?? brokerAddress.host, brokerAddress.port);
      try {
        if (config.firewall === 'nftables' && brokerAddress !== undefined && controllerHost !== undefined) {
          // The kernel guards the broker port for local processes too: a short grant lets the controller connect;
          // its established session then outlives the grant, like a device's.
          const now = clock.now();
          await firewall.allow([
            {
              deviceId: CONTROLLER_IDENTITY,
              address: controllerHost,
              family: controllerHost.includes(':') ? 6 : 4,
              access: [{ protocol: 'tcp', port: brokerAddress.port }],
              openedAt: now,
              expiresAt: now + 60_000,
            },
          ]);
        }
        keyRotation = await startKeyRotation({
          url: controllerUrl,
          ...(inProcess === undefined ? {} : { transport: () => inProcess.connect() }),
          caCert: ca.cert,
          tls: await ensureControllerTls(layout.pkiDir, ca),
          devicesFile: layout.devicesFile,
          audit: deps.audit,
          clock,
          random,
          timers: systemTimers,
          onChange: () => directory.reload(),
          config: { periodMs: config.keyRotationHours * 3_600_000, ...hooks.keyRotation },
          // Pending offers go out in the background, after ready: startup never waits on the fleet.
          onBackgroundError: (error) =>
            note(`key rotation: the first schedule run failed (${error.message})`),
        });
        const started = keyRotation;
        rotationRef.current = started;
        cleanup.defer(() => started.close());
        live();
        await writeControllerEndpoint(layout.root, controllerUrl);
        cleanup.defer(() => removeControllerEndpoint(layout.root));
      } catch (error) {
        if (error instanceof LocalCloudStoppedError || signal?.aborted === true) throw error;
        note(
          `key rotation is off: the controller could not reach ${controllerUrl} (${(error as Error).message})`,
        );
      }
    }

    // An external broker's control plane: its dynamic security follows the devices file.
    if (config.broker !== undefined) {
      const external = { host: config.broker.host, port: config.broker.port };
      const files = await writeBrokerFiles(
        join(layout.root, 'mosquitto'),
        external,
        layout.pkiDir,
        config.brokerPlain,
      );
      const wildcard = external.host === '0.0.0.0' || external.host === '::';
      const dynsec = await startBrokerDynsec({
        url: mqttUrl(wildcard ? '127.0.0.1' : external.host, external.port),
        caCert: ca.cert,
        tls: await ensureControllerTls(layout.pkiDir, ca),
        devices: () => directory.devices(),
        note,
      });
      if (dynsec === undefined) {
        if (keeper !== undefined) {
          note(
            "plain profile: without the broker's dynamic security no plain device can log in at that broker",
          );
        }
        note(
          `a Mosquitto 2 configuration for that broker is in ${displayPath(files.conf)} (docs/local.md, --broker)`,
        );
      } else {
        dynsecRef.current = dynsec;
        cleanup.defer(() => dynsec.close());
        watchBrokerSessions(dynsec, deps, keeper, deviceAddressOf, note);
        // Before the admin session ends: live credentials are withdrawn at the broker (LIFO).
        if (keeper !== undefined) cleanup.defer(() => keeper.close());
        note(`broker dynamic security: ${mqttUrl(external.host, external.port)} follows the devices file`);
      }
      live();
    }

    // Tell devices where everything is.
    const endpoints: Endpoints = {
      host: config.advertisedHost,
      spaPort: receiver.address.port,
      mqttPort: publicPort,
      ...(plainPublicPort === undefined ? {} : { plainPort: plainPublicPort }),
    };
    await writeEndpoints(layout, endpoints);
    // Remembered once this run is up: a start that failed does not change what the next one uses.
    if (await savePublicAddresses(layout, config.publicAddresses)) {
      note(
        config.publicAddresses.length === 0
          ? 'public address forgotten: device files name the listening address again'
          : `public address ${config.publicAddresses.join(', ')} recorded in ${displayPath(layout.publicAddressFile)} (kept for the next runs; --no-public-address forgets it)`,
      );
    }
    const refresh = await refreshDeviceEndpoints(layout, endpoints, [
      ...(previousEndpoints === undefined ? [] : [previousEndpoints]),
      provisional,
    ]);
    for (const skipped of refresh.skipped) {
      note(`device file ${skipped} is not valid JSON: its endpoints were not updated`);
    }
    const demoFile = demoDevice?.deviceFile;
    const updated = refresh.updated.filter((file) => file !== demoFile);
    if (updated.length > 0) {
      note(
        `${updated.length} device file(s) now point at ${mqttUrl(endpoints.host, endpoints.mqttPort)} and SPA ` +
          `${endpoints.host} udp/${endpoints.spaPort}: ${updated.slice(0, 5).map(displayPath).join(', ')}` +
          `${updated.length > 5 ? ` and ${updated.length - 5} more` : ''} (copy them onto the devices again)`,
      );
    }
    for (const kept of refresh.kept) {
      note(
        `device file ${displayPath(kept.file)}: ${kept.fields.join(', ')} edited by hand, left as it is ` +
          `(up listens for devices at ${endpoints.host} udp/${endpoints.spaPort}, tcp/${endpoints.mqttPort})`,
      );
    }
    await owner.updateOwner({
      state: 'ready',
      spa: { host: receiver.address.address, port: receiver.address.port },
      mqtt: { host: config.host, port: publicPort },
    });
    live();

    return Object.freeze({
      layout,
      config,
      spa: { host: receiver.address.address, port: receiver.address.port },
      mqtt: { host: config.host, port: publicPort, url: mqttUrl(config.advertisedHost, publicPort) },
      ...(plainPublicPort === undefined
        ? {}
        : {
            plain: {
              host: config.host,
              port: plainPublicPort,
              url: plainMqttUrl(config.advertisedHost, plainPublicPort),
            },
          }),
      ...(keeper === undefined ? {} : { credentials: keeper }),
      broker:
        brokerAddress === undefined
          ? { embedded: true, inProcess: true }
          : { ...brokerAddress, embedded: broker !== undefined, inProcess: false },
      endpoints,
      ...(demoDevice === undefined ? {} : { demoDevice }),
      directory,
      deps,
      ...(keyRotation === undefined ? {} : { keyRotation }),
      ...(prefilter === undefined ? {} : { prefilter }),
      counters: () => receiver.counters(),
      lost,
      close() {
        // Receiver first (no new grants), then revoke grants, then the firewall, broker and stores, then the lock.
        return cleanup.close();
      },
    });
  } catch (error) {
    await cleanup.close().catch(() => undefined);
    if (signal?.aborted === true && !(error instanceof LocalCloudStoppedError)) {
      throw new LocalCloudStoppedError(String(signal.reason), { cause: error });
    }
    throw error;
  }
}
