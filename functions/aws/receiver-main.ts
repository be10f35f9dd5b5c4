/**
 * The receiver on AWS (systemd unit on the receiver instance): reads its configuration from the environment
 * (receiver-config.ts), creates the SDK clients once, wires the AWS adapters into the same receiver the local run uses
 * (createReceiverDeps + startReceiver), and shuts down on SIGTERM/SIGINT: by default revoking every grant it
 * opened; with BLACKCLOUD_SHUTDOWN=handover (receivers behind a load balancer) leaving them open for their delayed
 * SQS messages and the sweeper, so replacing a receiver never closes a grant a device is about to use. With
 * BLACKCLOUD_HEALTH_PORT it also answers the load balancer's TCP health check (health-listener.ts), opened after
 * the SPA socket and closed before it.
 *
 *   node functions/aws/receiver-main.ts                 run (Node 24 runs the TypeScript as is)
 *   node functions/aws/receiver-main.ts --print-config  print the configuration as understood, exit
 * Exit codes: 0 after a clean shutdown, 78 (EX_CONFIG) for invalid configuration, 1 for anything else.
 * Every log line is JSON on stdout (audit events, EMF metrics, receiver messages); the CloudWatch agent ships it.
 * The firewall fills the broker groups from `fillOffsetOf(lease holder id)` on (sg-plan.ts): the id is random per
 * process, so receivers start spread over the groups, though two often share one (4 receivers on 5 groups all
 * start apart only about 19 % of the time; docs/scaling.md "Staying inside the EC2 API budget"). With
 * BLACKCLOUD_RECEIVERS above 1 (the scaled stack) each receiver also takes one of that many share leases (items in
 * the devices table, slot-share-lease.ts) and, while it holds one, places new rules only in its share of the slots
 * (SecurityGroupFirewall `setSlotShare`), so receivers no longer spend Authorize calls on groups others filled.
 * Grants left open by a previous run are not re-armed here: their delayed SQS messages and the sweeper close them.
 * With BLACKCLOUD_BROKER_HOST and the controller TLS files set, the receiver also competes for the controller lease
 * (functions/aws/controller-lease.ts, an item in the devices table) and runs the key-rotation controller
 * (functions/aws/aws-controller.ts) only while it holds it, so among several receivers at most one rotates
 * keys. A single receiver always wins the lease. If the controller cannot be started it logs a warning and gives
 * the lease up (another receiver, or this one at its next tick, tries again); the receiver runs on regardless.
 * With the same settings EVERY receiver (leader or not) also holds an admin session with the broker's
 * dynamic-security plugin (broker-sync.ts, client id `blackcloud-dynsec-<lease holder id>`) and reconciles the
 * broker's clients with the device index after every successful index refresh, so a device disabled or removed
 * in the registry loses its broker session within one refresh (docs/fleet.md).
 * With BLACKCLOUD_PLAIN_BROKER_PORT (the stack's plain listener) grants may also open that port, and, over the same
 * admin session, each accepted knock of a plain device sets that device's broker password to the knock's one-time
 * credential until the grant closes or the window ends (aws-plain-profile.ts; docs/fleet.md, "Plain devices on
 * AWS"). The credential is never logged, audited or counted.
 * Every receiver with that admin session also watches the broker's connection log (`$SYS/broker/log/N`,
 * functions/broker/mosquitto-session-watcher.ts): a session of a device from address A calls the grant manager's
 * `sessionEstablished(device, A)` (closed on connect, docs/scaling.md; the connect claims are shared by every
 * receiver in the grants table, dynamo-connect-claims.ts; not with BLACKCLOUD_CLOSE_ON_CONNECT=off, the operator's
 * switch), and a plain device's credential is held while
 * the session it opened lives (Mosquitto 2.0.11 would end that session on a password change) and withdrawn when it
 * ends.
 */
import { readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import type { AccessEntry } from '../../spa/types.ts';
import { grantControllerLog } from '../broker/dynsec-commands.ts';
import { MOSQUITTO_NOTICE_LOG_TOPIC } from '../broker/mosquitto-session-log.ts';
import { watchMosquittoSessions } from '../broker/mosquitto-session-watcher.ts';
import type { Clock, RemoteEndpoint, Timers } from '../core/interfaces.ts';
import { systemClock, systemRandom, systemTimers } from '../core/system.ts';
import { createCounters } from '../receiver/counters.ts';
import type { GrantManager } from '../receiver/grant-manager.ts';
import type { Outcome } from '../receiver/handle-datagram.ts';
import { createReceiverDeps } from '../receiver/receiver-deps.ts';
import { sessionSignalHandler } from '../receiver/session-signal.ts';
import { type RunningReceiver, startReceiver } from '../receiver/udp-receiver.ts';
import {
  type AwsControllerConfig,
  type AwsKeyRotation,
  loadAwsControllerConfig,
  startAwsKeyRotation,
} from './aws-controller.ts';
import { type AwsPlainProfile, startAwsPlainProfile } from './aws-plain-profile.ts';
import { type AwsBrokerSync, startAwsBrokerSync } from './broker-sync.ts';
import { Ec2Pacing } from './call-pacer.ts';
import { type AwsClients, awsClients, destroyAwsClients } from './clients.ts';
import { CloudWatchAuditSink } from './cloudwatch-audit-sink.ts';
import { ControllerLease, type LeaseTimings, newHolderId } from './controller-lease.ts';
import { DynamoConnectClaims } from './dynamo-connect-claims.ts';
import { DynamoGrantStore } from './dynamo-grant-store.ts';
import { DynamoNonceStore } from './dynamo-nonce-store.ts';
import { AwsConfigError, describeError } from './errors.ts';
import { type HealthListener, startHealthListener } from './health-listener.ts';
import { IotDeviceDirectory } from './iot-device-directory.ts';
import { EmfMetrics, type LineWriter } from './metrics.ts';
import { type AwsReceiverConfig, formatAwsReceiverConfig, loadAwsReceiverConfig } from './receiver-config.ts';
import { defaultRetryPolicy, isThrottling, type RetryPolicy } from './retry.ts';
import { SecurityGroupFirewall } from './security-group-firewall.ts';
import { fillOffsetOf } from './sg-plan.ts';
import { SlotShareLease } from './slot-share-lease.ts';
import { SqsExpiryScheduler } from './sqs-expiry-scheduler.ts';

export const DEFAULT_AWS_RECEIVER_HOST = '0.0.0.0';

export interface StartAwsReceiverOptions {
  /** @default '0.0.0.0' */
  readonly host?: string;
  /** Overrides config.spaPort (tests bind 0). */
  readonly port?: number;
  /** Overrides config.healthPort (tests bind 0). */
  readonly healthPort?: number;
  /** @default the process-wide clients for config.region / config.endpoint */
  readonly clients?: AwsClients;
  /** @default process.stdout */
  readonly out?: LineWriter;
  /** How often the EMF metrics are written (metrics.ts); the rest is written on close. @default 60000 */
  readonly metricsFlushMs?: number;
  readonly clock?: Clock;
  readonly timers?: Timers;
  readonly retry?: RetryPolicy;
  readonly onOutcome?: (outcome: Outcome, remote: RemoteEndpoint) => void;
  /** Key rotation (the receiver as controller, while it holds the controller lease). @default off */
  readonly keyRotation?: AwsControllerConfig;
  /** Controller lease timings. @default lease 60 s, renew 20 s, safety 10 s */
  readonly lease?: LeaseTimings;
  /** The lease holder id (also names this receiver's dynamic-security admin session). @default 16 random bytes, hex */
  readonly leaseHolderId?: string;
  /** Retry period of the dynamic-security admin session's connect (broker-sync.ts). @default 10000 */
  readonly brokerSyncRetryMs?: number;
}

export interface AwsReceiver {
  readonly receiver: RunningReceiver;
  /** The device index (refreshed in the background; `refresh()` reloads it now). */
  readonly directory: IotDeviceDirectory;
  readonly firewall: SecurityGroupFirewall;
  /**
   * The grant manager: `sessionEstablished(deviceId, address)` is where a broker's session signal enters (closed on
   * connect, docs/scaling.md); revokes go through `firewall` and the grants table like any other.
   */
  readonly grants: GrantManager;
  /**
   * The key-rotation controller while this receiver holds the controller lease and runs it (undefined when
   * rotation is off, another receiver is leader, or it is still starting).
   */
  readonly keyRotation: AwsKeyRotation | undefined;
  /** The controller lease (undefined when rotation is off). */
  readonly lease: ControllerLease | undefined;
  /** The share of the rule slots this receiver fills (undefined with BLACKCLOUD_RECEIVERS = 1). */
  readonly slotShare: SlotShareLease | undefined;
  /** The health port, when configured. */
  readonly health: HealthListener | undefined;
  /** The broker's dynamic security kept in step with the index (undefined when rotation is off). */
  readonly brokerSync: AwsBrokerSync | undefined;
  /** The plain profile's credentials at the broker (undefined without a plain port or without brokerSync). */
  readonly plain: AwsPlainProfile | undefined;
  /**
   * Stop the key-rotation controller and release the lease, close the health port, stop receiving, then revoke every grant this process
   * opened (shutdown 'revoke') or hand them to the revoke queue and sweeper ('handover'), flush the firewall, and
   * write the last metrics. Idempotent.
   */
  close(): Promise<void>;
}

export async function startAwsReceiver(
  config: AwsReceiverConfig,
  options: StartAwsReceiverOptions = {},
): Promise<AwsReceiver> {
  const clock = options.clock ?? systemClock;
  const timers = options.timers ?? systemTimers;
  const out = options.out ?? process.stdout;
  const clients = options.clients ?? awsClients({ region: config.region, endpoint: config.endpoint });
  const log = (level: 'info' | 'warn', message: string) =>
    out.write(`${JSON.stringify({ kind: 'receiver', level, time: clock.now(), message })}\n`);

  const counters = createCounters();
  const metrics = new EmfMetrics({
    out,
    clock,
    timers,
    counters: () => counters.snapshot(),
    ...(options.metricsFlushMs === undefined ? {} : { flushMs: options.metricsFlushMs }),
  });
  const audit = new CloudWatchAuditSink({ out, metrics });
  const grantStore = new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: config.grantsTable });
  const brokerAccess: AccessEntry[] = [
    { protocol: 'tcp', port: config.brokerPort },
    ...(config.plainBrokerPort === undefined
      ? []
      : [{ protocol: 'tcp' as const, port: config.plainBrokerPort }]),
  ];
  const retry = options.retry ?? { ...defaultRetryPolicy(), maxAttempts: config.ec2Attempts };
  const holderId = options.leaseHolderId ?? newHolderId(systemRandom);
  const firewall = new SecurityGroupFirewall({
    ec2: clients.ec2,
    securityGroupIds: config.brokerSecurityGroupIds,
    // Receivers in an Auto Scaling group know no index of their own: each starts filling at the group its
    // process id hashes to, so receivers spread over the groups, two often sharing one (docs/scaling.md
    // "Staying inside the EC2 API budget").
    fillOffset: fillOffsetOf(holderId),
    brokerAccess,
    clock,
    timers,
    retry,
    metrics,
    grantStore,
    // Several receivers share the account's EC2 budget: each paces its calls (docs/scaling.md).
    pacing: new Ec2Pacing({
      clock,
      sleep: (ms) => retry.sleep(ms),
      isThrottling, // throttled calls are already counted: ApiErrors by Code
    }),
    rulesPerGroup: config.rulesPerGroup,
    coalesceWindowMs: config.coalesceMs,
    ...(config.closeWindowMs === undefined ? {} : { closeWindowMs: config.closeWindowMs }),
    onGrantStoreError: (error) =>
      log('warn', `grants table write failed (rule stays correct): ${describeError(error)}`),
  });
  let brokerSync: AwsBrokerSync | undefined; // set once the index is loaded, below
  const directory = new IotDeviceDirectory({
    iot: clients.iot,
    dynamodb: clients.dynamodb,
    devicesTable: config.devicesTable,
    fleetThingGroup: config.fleetThingGroup,
    clock,
    defaultMaxOpenSeconds: config.grantSeconds,
    timers,
    refreshMs: config.directoryRefreshSeconds * 1000,
    onDeviceError: (deviceId, error) => log('warn', `device ${deviceId} skipped: ${describeError(error)}`),
    onRefreshError: (error) => {
      counters.increment('directory.refresh.failed');
      log('warn', `device index refresh failed, the last good index stays: ${describeError(error)}`);
    },
    onRefreshed: () => void brokerSync?.sync(),
  });
  // The index is loaded before the SPA port opens: no datagram ever waits on (or causes) a directory AWS call.
  try {
    await directory.start();
  } catch (error) {
    metrics.close();
    throw new Error(
      `cannot load the device index (fleet thing group ${config.fleetThingGroup}, table ${config.devicesTable}): ` +
        describeError(error),
    );
  }
  const indexed = directory.stats();
  log('info', `device index loaded: ${indexed.devices} device(s), ${indexed.keys} key(s)`);
  const brokerConfig = options.keyRotation;
  if (
    brokerConfig?.enabled === true &&
    brokerConfig.brokerHost !== undefined &&
    brokerConfig.caFile !== undefined &&
    brokerConfig.certFile !== undefined &&
    brokerConfig.keyFile !== undefined
  ) {
    let ca: Buffer;
    let cert: Buffer;
    let key: Buffer;
    try {
      [ca, cert, key] = await Promise.all([
        readFile(brokerConfig.caFile),
        readFile(brokerConfig.certFile),
        readFile(brokerConfig.keyFile),
      ]);
    } catch (error) {
      directory.close();
      metrics.close();
      throw new Error(`cannot read the controller TLS files for the broker: ${describeError(error)}`);
    }
    const host = brokerConfig.brokerHost.includes(':')
      ? `[${brokerConfig.brokerHost}]`
      : brokerConfig.brokerHost;
    brokerSync = startAwsBrokerSync({
      url: `mqtts://${host}:${config.brokerPort}`,
      ca,
      cert,
      key,
      ...(brokerConfig.servername === undefined ? {} : { servername: brokerConfig.servername }),
      clientId: `blackcloud-dynsec-${holderId}`,
      devices: () => directory.deviceStates(),
      log,
      timers,
      ...(options.brokerSyncRetryMs === undefined ? {} : { retryMs: options.brokerSyncRetryMs }),
    });
  }
  let plain: AwsPlainProfile | undefined;
  if (config.plainBrokerPort !== undefined) {
    if (brokerSync === undefined) {
      log(
        'warn',
        `plain listener on port ${config.plainBrokerPort} but no admin session with the broker (set the broker host ` +
          'and controller TLS files): plain devices get grants but cannot log in',
      );
    } else {
      plain = startAwsPlainProfile({ admin: brokerSync, clock, timers, counters, log });
    }
  }
  const deps = createReceiverDeps({
    directory,
    nonces: new DynamoNonceStore({ dynamodb: clients.dynamodb, tableName: config.nonceTable }),
    firewall: plain === undefined ? firewall : plain.firewall(firewall),
    ...(plain === undefined ? {} : { connectCredentials: plain.keeper }),
    audit,
    // Shared by every receiver on the grants table: closed on connect behind the load balancer (docs/scaling.md).
    connectClaims: new DynamoConnectClaims({ dynamodb: clients.dynamodb, tableName: config.grantsTable }),
    expiry: new SqsExpiryScheduler({ sqs: clients.sqs, queueUrl: config.revokeQueueUrl, clock }),
    clock,
    timers,
    counters,
    config: { clockWindowMs: config.clockWindowSeconds * 1000, defaultGrantSeconds: config.grantSeconds },
    deviceBounds: { maxAddressesPerDevice: config.maxAddressesPerDevice },
  });

  if (brokerSync !== undefined) {
    const admin = brokerSync;
    void watchMosquittoSessions({
      subscriber: brokerSync,
      ensureAccess: () => admin.send(grantControllerLog()),
      onEvent: sessionSignalHandler({
        // The operator's switch (BLACKCLOUD_CLOSE_ON_CONNECT=off): grants then live for their window.
        grants: config.closeOnConnect === 'on' ? deps.grants : { sessionEstablished: async () => [] },
        ...(plain === undefined ? {} : { keeper: plain.keeper }),
        onError: (deviceId, error) =>
          log('warn', `closed on connect for ${deviceId} failed: ${describeError(error)}`),
      }),
      onError: (error) => log('warn', `broker session signal: ${describeError(error)}`),
    }).then((granted) =>
      log(
        granted ? 'info' : 'warn',
        granted
          ? `broker session signal: watching ${MOSQUITTO_NOTICE_LOG_TOPIC}`
          : `broker session signal: the broker refused ${MOSQUITTO_NOTICE_LOG_TOPIC}, also after adding ` +
              "$SYS/broker/log/# to the controller's dynamic-security role " +
              '(functions/broker/dynsec-policy.ts): grants live for their window and plain sessions end with it',
      ),
    );
  }

  try {
    const previous = await grantStore.listActive(clock.now());
    if (previous.length > 0) {
      log(
        'info',
        `${previous.length} grant(s) open from a previous run: their revoke messages and the sweeper close them`,
      );
    }
  } catch (error) {
    log('warn', `could not read the grants table at start: ${describeError(error)}`);
  }

  let rotation: AwsKeyRotation | undefined;
  let lease: ControllerLease | undefined;
  const current = (): AwsKeyRotation | undefined => (lease?.isLeader === true ? rotation : undefined);
  const receiver = await startReceiver({
    host: options.host ?? DEFAULT_AWS_RECEIVER_HOST,
    port: options.port ?? config.spaPort,
    deps,
    logger: { info: (m) => log('info', m), warn: (m) => log('warn', m) },
    onOutcome: (outcome, remote) => {
      if (outcome.ok && outcome.value.keyId !== undefined) {
        void current()?.controller.noteKeyUsed(outcome.value.deviceId, outcome.value.keyId);
      }
      options.onOutcome?.(outcome, remote);
    },
  });
  // Start/stop steps run one after the other: a step-down waits for a start in progress, then closes it.
  let steps: Promise<void> = Promise.resolve();
  const stopRotation = async () => {
    const running = rotation;
    rotation = undefined;
    if (running === undefined) return;
    try {
      await running.close();
      log('info', 'key rotation stopped: this receiver no longer holds the controller lease');
    } catch (error) {
      log('warn', `key rotation did not close cleanly: ${describeError(error)}`);
    }
  };
  const rotationConfig = options.keyRotation;
  if (rotationConfig?.enabled === true) {
    const startRotation = async () => {
      if (rotation !== undefined || lease?.isLeader !== true) return;
      try {
        rotation = await startAwsKeyRotation({
          config: rotationConfig,
          brokerPort: config.brokerPort,
          clients,
          devicesTable: config.devicesTable,
          fleetThingGroup: config.fleetThingGroup,
          directory,
          audit,
          clock,
          timers,
          random: systemRandom,
        });
        log(
          'info',
          `key rotation on (controller lease held): controller session to ${rotationConfig.brokerHost}:${config.brokerPort}`,
        );
      } catch (error) {
        log('warn', `key rotation is off: the controller failed to start (${describeError(error)})`);
        await lease?.release(); // let another receiver (or this one at its next tick) try
        return;
      }
      if (lease?.isLeader !== true) await stopRotation(); // stepped down while starting
    };
    lease = new ControllerLease({
      dynamodb: clients.dynamodb,
      table: config.devicesTable,
      holderId,
      clock,
      timers,
      ...options.lease,
      onLeadershipChange: (leader) => {
        steps = steps.then(leader ? startRotation : stopRotation);
      },
      onError: (error) =>
        log(
          'warn',
          `controller lease: DynamoDB failed, not leader until the next tick (${describeError(error)})`,
        ),
    });
    await lease.start();
    await steps;
  }

  let slotShare: SlotShareLease | undefined;
  if (config.receivers > 1) {
    slotShare = new SlotShareLease({
      dynamodb: clients.dynamodb,
      table: config.devicesTable,
      holderId,
      of: config.receivers,
      firstIndex: fillOffsetOf(holderId) % config.receivers,
      clock,
      timers,
      ...options.lease,
      onShareChange: (share) => {
        firewall.setSlotShare(share);
        log(
          'info',
          share === undefined
            ? `grant slots: no share of ${config.receivers} held, new rules go to any free slot until one is`
            : `grant slots: share ${share.index} of ${share.of} held, new rules go to its slots only`,
        );
      },
      onError: (error) =>
        log(
          'warn',
          `grant slot share: DynamoDB failed, no share until the next tick (${describeError(error)})`,
        ),
    });
    await slotShare.start();
  }

  const healthPort = options.healthPort ?? config.healthPort;
  let health: HealthListener | undefined;
  if (healthPort !== undefined) {
    try {
      health = await startHealthListener({
        host: options.host ?? DEFAULT_AWS_RECEIVER_HOST,
        port: healthPort,
      });
    } catch (error) {
      await lease?.stop();
      await steps;
      await stopRotation();
      await lease?.release();
      await slotShare?.close();
      await receiver.close();
      directory.close();
      await plain?.close();
      await brokerSync?.close();
      throw error;
    }
  }

  let closing: Promise<void> | undefined;
  return {
    receiver,
    directory,
    grants: deps.grants,
    firewall,
    get keyRotation() {
      return current();
    },
    lease,
    slotShare,
    health,
    brokerSync,
    plain,
    close() {
      closing ??= (async () => {
        await lease?.stop();
        await steps;
        await stopRotation();
        await lease?.release();
        await slotShare?.close();
        await health?.close();
        await receiver.close();
        directory.close();
        await plain?.close();
        await brokerSync?.close();
        if (config.shutdown === 'handover') {
          const handed = await deps.grants.release();
          log('info', `${handed.length} open grant(s) handed to the revoke queue and the sweeper`);
        } else {
          await deps.grants.close();
        }
        await firewall.close();
        metrics.close();
      })();
      return closing;
    },
  };
}

/** The process entry point. */
export async function main(
  argv: readonly string[] = process.argv.slice(2),
  env = process.env,
): Promise<number> {
  let config: AwsReceiverConfig;
  let keyRotation: AwsControllerConfig;
  try {
    config = loadAwsReceiverConfig(env);
    keyRotation = loadAwsControllerConfig(env);
  } catch (error) {
    if (error instanceof AwsConfigError) {
      process.stderr.write(`${error.message}\n`);
      return 78;
    }
    throw error;
  }
  if (argv.includes('--print-config')) {
    process.stdout.write(`${formatAwsReceiverConfig(config)}\n`);
    return 0;
  }
  const running = await startAwsReceiver(config, { keyRotation });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await running.close();
  destroyAwsClients();
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`blackcloud receiver failed: ${describeError(error)}\n`);
      process.exit(1);
    },
  );
}
