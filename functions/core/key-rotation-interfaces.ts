/**
 * The key-rotation controller's ports: where key generations are kept (the device directory) and the privileged
 * broker session. Adapters: device-file-key-store.ts (the local devices file), controller-session.ts (mqtt.js).
 */

export type KeyState = 'pending' | 'current';

/** One native key generation of a device, as the directory records it (key material is fetched separately). */
export interface KeyGeneration {
  readonly keyId: number;
  /** 1, 2, 3, ... per device; keys written before rotation existed count as generation 0. */
  readonly generation: number;
  /** 'pending' = offered, not yet acknowledged (already accepted for knocks); 'current' otherwise. */
  readonly state: KeyState;
  /** When the generation was created (ms); undefined for keys of unknown age. */
  readonly createdAt?: number;
  /** After this instant (ms) the receiver refuses the key; undefined = no end. */
  readonly notAfter?: number;
}

export interface DeviceKeys {
  readonly deviceId: string;
  readonly enabled: boolean;
  readonly keys: readonly KeyGeneration[];
}

/**
 * One device as `list()` reads it in bulk. `enabled` is undefined when the store cannot read it in bulk (AWS: the
 * flag is a thing attribute, one DescribeThing per device): the controller then reads the device (`get`) before
 * acting on it.
 */
export interface ListedDeviceKeys extends Omit<DeviceKeys, 'enabled'> {
  readonly enabled?: boolean;
}

/** A change to one device's key generations. Applied atomically by the store. */
export type KeyChange =
  | {
      readonly type: 'add-pending';
      readonly keyId: number;
      readonly key: Uint8Array;
      readonly generation: number;
      readonly createdAt: number;
    }
  | {
      /** `keyId` pending → current; every other key ends at `othersNotAfter` (or earlier, if it already did). */
      readonly type: 'confirm';
      readonly keyId: number;
      readonly othersNotAfter: number;
    }
  | { readonly type: 'remove'; readonly keyIds: readonly number[] };

/**
 * Thrown by `apply` for an 'add-pending' whose key id is already reserved (by any device): nothing changed. The
 * key id is the reservation itself (AWS: the conditional put of `key#<id>`; locally: the devices file, under its
 * lock), so the controller draws another id and tries again.
 */
export class KeyIdTakenError extends Error {
  override readonly name = 'KeyIdTakenError';
  readonly keyId: number;

  constructor(keyId: number, message: string) {
    super(message);
    this.keyId = keyId;
  }
}

/**
 * Durable key generations (the device directory). `apply` is atomic per call and serialised; after it resolves,
 * the receiver's directory sees the change (the local store reloads it).
 */
export interface KeyGenerationStore {
  /** Every device, read in bulk (a constant number of reads per tick, or one per 100 items; never per device). */
  list(): Promise<readonly ListedDeviceKeys[]>;
  get(deviceId: string): Promise<DeviceKeys | undefined>;
  /** The 32-byte key of a generation; undefined when unknown. Never logged. */
  keyMaterial(deviceId: string, keyId: number): Promise<Uint8Array | undefined>;
  /** 'add-pending' with a key id already reserved rejects with `KeyIdTakenError`, changing nothing. */
  apply(deviceId: string, change: KeyChange): Promise<void>;
}

/** The controller's privileged broker session (publish sealed offers; acks arrive through `onMessage`). */
export interface ControllerSession {
  publish(topic: string, payload: string | Uint8Array): Promise<void>;
}
