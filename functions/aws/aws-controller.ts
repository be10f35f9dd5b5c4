/**
 * The key-rotation controller on the AWS receiver: configuration from the environment (the names the stack sets,
 * functions/core/environment.ts) and the wiring of the controller session, the DynamoDB key store and the schedule.
 *
 *   BLACKCLOUD_KEY_ROTATION_SECONDS    rotation period                            default 86400 (24 h)
 *   BLACKCLOUD_BROKER_HOST             broker address for the controller session  unset = no key rotation
 *   BLACKCLOUD_BROKER_TLS_SERVER_NAME  name in the broker certificate              optional
 *   BLACKCLOUD_CONTROLLER_CA_FILE      CA certificate (PEM)                        required with the broker host
 *   BLACKCLOUD_CONTROLLER_CERT_FILE    controller certificate, CN blackcloud-controller
 *   BLACKCLOUD_CONTROLLER_KEY_FILE     its private key (never logged)
 *
 * Contract: `loadAwsControllerConfig` validates once and throws `AwsConfigError` naming the variable, the value
 * and the fix; `enabled` is false when no broker host is set. `startAwsKeyRotation` reads the TLS files, starts a
 * lazy session (mutual TLS, server certificate verified; it keeps connecting in the background, since the broker
 * may boot after the receiver) and the schedule (which re-sends pending offers once the session is up).
 */

import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ENV } from '../core/environment.ts';
import type { AuditSink, Clock, RandomSource, Timers } from '../core/interfaces.ts';
import {
  connectControllerSession,
  type RunningControllerSession,
} from '../key-rotation/controller-session.ts';
import { KeyRotationController } from '../key-rotation/key-rotation-controller.ts';
import type { AwsClients } from './clients.ts';
import { DynamoKeyStore } from './dynamo-key-store.ts';
import { type Env, readEnv, secondsSchema } from './env-config.ts';
import { AwsConfigError } from './errors.ts';
import type { IotDeviceDirectory } from './iot-device-directory.ts';

const hostSchema = z.string().regex(/^[A-Za-z0-9.:-]{1,253}$/);
const pathSchema = z.string().regex(/^\/\S+$/);
const file = (name: string, what: string) => ({
  name,
  schema: pathSchema,
  expected: `an absolute path to the ${what} (PEM)`,
  fix: `set it to the ${what} file the boot script writes`,
  optional: true as const,
});

export const awsControllerVars = {
  keyRotationSeconds: {
    name: ENV.keyRotationSeconds,
    schema: secondsSchema(60, 366 * 86_400),
    expected: 'an integer number of seconds 60..31622400',
    fix: 'set the rotation period, or unset it for the default (24 h)',
    default: 86_400,
  },
  brokerHost: {
    name: ENV.brokerHost,
    schema: hostSchema,
    expected: "the broker's host name or IP address",
    fix: "set it to the broker's private address (stack: broker.privateAddress), or unset it to turn rotation off",
    optional: true as const,
  },
  brokerTlsServerName: {
    name: ENV.brokerTlsServerName,
    schema: hostSchema,
    expected: 'the DNS name in the broker certificate',
    fix: 'set it to the name the broker certificate was issued for',
    optional: true as const,
  },
  caFile: file(ENV.controllerCaFile, 'CA certificate'),
  certFile: file(ENV.controllerCertFile, 'controller certificate'),
  keyFile: file(ENV.controllerKeyFile, 'controller private key'),
} as const;

export interface AwsControllerConfig {
  readonly enabled: boolean;
  readonly periodMs: number;
  readonly brokerHost?: string;
  readonly servername?: string;
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

export function loadAwsControllerConfig(env: Env = process.env): AwsControllerConfig {
  const raw = readEnv(env, awsControllerVars, 'blackcloud key rotation');
  if (raw.brokerHost !== undefined) {
    const missing = (['caFile', 'certFile', 'keyFile'] as const)
      .filter((key) => raw[key] === undefined)
      .map((key) => awsControllerVars[key].name);
    if (missing.length > 0) {
      throw new AwsConfigError(
        `blackcloud key rotation configuration is invalid: BLACKCLOUD_BROKER_HOST is set but ${missing.join(', ')} ` +
          'not. Fix: set the controller TLS files, or unset BLACKCLOUD_BROKER_HOST to turn rotation off',
      );
    }
  }
  return Object.freeze({
    enabled: raw.brokerHost !== undefined,
    periodMs: raw.keyRotationSeconds * 1000,
    ...(raw.brokerHost === undefined ? {} : { brokerHost: raw.brokerHost }),
    ...(raw.brokerTlsServerName === undefined ? {} : { servername: raw.brokerTlsServerName }),
    ...(raw.caFile === undefined ? {} : { caFile: raw.caFile }),
    ...(raw.certFile === undefined ? {} : { certFile: raw.certFile }),
    ...(raw.keyFile === undefined ? {} : { keyFile: raw.keyFile }),
  });
}

export interface StartAwsKeyRotationOptions {
  readonly config: AwsControllerConfig;
  readonly brokerPort: number;
  readonly clients: AwsClients;
  readonly devicesTable: string;
  readonly fleetThingGroup: string;
  readonly directory: IotDeviceDirectory;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly timers: Timers;
  readonly random: RandomSource;
}

export interface AwsKeyRotation {
  readonly controller: KeyRotationController;
  readonly session: RunningControllerSession;
  close(): Promise<void>;
}

export async function startAwsKeyRotation(options: StartAwsKeyRotationOptions): Promise<AwsKeyRotation> {
  const { config } = options;
  if (
    !config.enabled ||
    config.caFile === undefined ||
    config.certFile === undefined ||
    config.keyFile === undefined
  ) {
    throw new AwsConfigError(
      'key rotation is not configured: set BLACKCLOUD_BROKER_HOST and the controller TLS files',
    );
  }
  const [ca, cert, key] = await Promise.all([
    readFile(config.caFile),
    readFile(config.certFile),
    readFile(config.keyFile),
  ]);
  const host = config.brokerHost!.includes(':') ? `[${config.brokerHost}]` : config.brokerHost!;
  let controller: KeyRotationController | undefined;
  const session = await connectControllerSession({
    url: `mqtts://${host}:${options.brokerPort}`,
    ca,
    cert,
    key,
    ...(config.servername === undefined ? {} : { servername: config.servername }),
    onMessage: (topic, payload) => controller?.handleMessage(topic, payload),
    lazy: true, // the broker may boot after the receiver: keep trying, re-send offers once connected
  });
  const store = new DynamoKeyStore({
    iot: options.clients.iot,
    dynamodb: options.clients.dynamodb,
    devicesTable: options.devicesTable,
    fleetThingGroup: options.fleetThingGroup,
    directory: options.directory,
  });
  controller = new KeyRotationController({
    store,
    session,
    audit: options.audit,
    clock: options.clock,
    random: options.random,
    timers: options.timers,
    config: { periodMs: config.periodMs },
  });
  const started = controller;
  // Once (re)connected, offer what is pending at once rather than at the next tick.
  session.client.on('connect', () => started.tickSoon());
  try {
    await started.start();
  } catch (error) {
    started.stop();
    await session.close();
    throw error;
  }
  return {
    controller: started,
    session,
    async close() {
      started.stop();
      await session.close();
    },
  };
}
