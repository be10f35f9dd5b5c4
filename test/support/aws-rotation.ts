/**
 * Test support for key rotation on the AWS directory: the receiver's IotDeviceDirectory, the DynamoKeyStore over
 * it, a recording controller session and a memory audit sink, wired into a KeyRotationController (real objects,
 * pointed at moto through `clients`).
 */
import type { AwsClients } from '../../functions/aws/clients.ts';
import { DynamoKeyStore } from '../../functions/aws/dynamo-key-store.ts';
import { IotDeviceDirectory } from '../../functions/aws/iot-device-directory.ts';
import type { Clock, RandomSource } from '../../functions/core/interfaces.ts';
import type { ControllerSession } from '../../functions/core/key-rotation-interfaces.ts';
import { systemRandom, systemTimers } from '../../functions/core/system.ts';
import {
  type KeyRotationConfig,
  KeyRotationController,
} from '../../functions/key-rotation/key-rotation-controller.ts';
import { MemoryAuditSink } from '../../functions/local/audit.ts';

/** A real (in-memory) ControllerSession: what would go to the broker is kept in order. */
export class RecordingSession implements ControllerSession {
  readonly published: { topic: string; payload: Uint8Array }[] = [];
  async publish(topic: string, payload: string | Uint8Array): Promise<void> {
    this.published.push({ topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload });
  }
}

export interface AwsRotationOptions {
  readonly clients: AwsClients;
  readonly fleetThingGroup: string;
  readonly clock: Clock;
  readonly config: Partial<KeyRotationConfig>;
  /** @default systemRandom */
  readonly random?: RandomSource;
  /** @default 'devices' */
  readonly devicesTable?: string;
}

export function awsRotation(options: AwsRotationOptions) {
  const { clients, fleetThingGroup, clock } = options;
  const devicesTable = options.devicesTable ?? 'devices';
  const directory = new IotDeviceDirectory({
    iot: clients.iot,
    dynamodb: clients.dynamodb,
    devicesTable,
    fleetThingGroup,
    clock,
    defaultMaxOpenSeconds: 30,
  });
  const store = new DynamoKeyStore({
    iot: clients.iot,
    dynamodb: clients.dynamodb,
    devicesTable,
    fleetThingGroup,
    directory,
  });
  const session = new RecordingSession();
  const audit = new MemoryAuditSink();
  const controller = new KeyRotationController({
    store,
    session,
    audit,
    clock,
    random: options.random ?? systemRandom,
    timers: systemTimers,
    config: options.config,
  });
  return { directory, store, session, audit, controller };
}
