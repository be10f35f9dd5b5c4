/**
 * The device side of key rotation (docs/key-lifecycle.md): while connected, receive new SPA keys on the
 * device's own key topic, store each durably, and only then acknowledge it with proof of possession.
 *
 * Contract:
 * - Subscribes to `blackcloud/keys/<deviceId>` (QoS 1). Each offer is handled one at a time, in arrival order.
 * - A malformed offer is ignored (reported through `onEvent`, nothing stored, nothing sent). The operator's
 *   session notice, which shares the topic (functions/core/session-notice.ts), is not an offer and is left to
 *   connectDevice without an event.
 * - A valid offer: `storeNativeKey` writes the key into the device file (atomic, 0600) BEFORE the ack is
 *   published; an offer of the key already stored (a re-sent offer) is acknowledged again without rewriting.
 * - The ack (QoS 1, on `blackcloud/keys/<deviceId>/ack`) carries a fresh 16-byte nonce and
 *   HMAC-SHA256(new key, label | key id | nonce).
 * - Key material never reaches `onEvent` or any log: events carry key ids only.
 */
import type { MqttClient } from 'mqtt';
import type { DeviceConfig } from '../functions/core/device-config.ts';
import { ACK_NONCE_LENGTH, encodeKeyAck, makeKeyAck, parseKeyOffer } from '../functions/core/key-messages.ts';
import { parseSessionNotice } from '../functions/core/session-notice.ts';
import { keyAckTopic, keyTopic } from '../functions/core/topics.ts';
import { storeNativeKey } from './key-store.ts';

export type KeyListenerEvent =
  | { readonly type: 'stored'; readonly keyId: number }
  | { readonly type: 'acknowledged'; readonly keyId: number }
  | { readonly type: 'ignored'; readonly reason: string }
  | { readonly type: 'failed'; readonly keyId: number; readonly error: string };

export interface KeyListenerOptions {
  readonly randomBytes: (length: number) => Uint8Array;
  readonly onEvent?: (event: KeyListenerEvent) => void;
}

export interface KeyListener {
  /** The key id currently stored (changes after each stored offer). */
  currentKeyId(): number | undefined;
  /** Resolves when every offer received so far has been handled. */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

export async function listenForKeys(
  client: MqttClient,
  config: DeviceConfig,
  options: KeyListenerOptions,
): Promise<KeyListener> {
  const topic = keyTopic(config.deviceId);
  let stored = config.spa.native?.keyId;
  let chain: Promise<void> = Promise.resolve();
  const emit = (event: KeyListenerEvent): void => {
    try {
      options.onEvent?.(event);
    } catch {
      // observers never break the listener
    }
  };

  const handle = async (payload: Uint8Array): Promise<void> => {
    if (parseSessionNotice(payload).ok) return;
    const offer = parseKeyOffer(payload);
    if (!offer.ok) {
      emit({ type: 'ignored', reason: offer.reason });
      return;
    }
    const { keyId, key } = offer.value;
    try {
      if (stored !== keyId) {
        await storeNativeKey(config.file, keyId, key); // durable before the ack
        stored = keyId;
        emit({ type: 'stored', keyId });
      }
      const ack = makeKeyAck(key, keyId, options.randomBytes(ACK_NONCE_LENGTH));
      await client.publishAsync(keyAckTopic(config.deviceId), encodeKeyAck(ack), { qos: 1 });
      emit({ type: 'acknowledged', keyId });
    } catch (error) {
      emit({ type: 'failed', keyId, error: error instanceof Error ? error.message : String(error) });
    }
  };

  const onMessage = (messageTopic: string, payload: Buffer): void => {
    if (messageTopic !== topic) return;
    chain = chain.then(() => handle(new Uint8Array(payload)));
  };
  client.on('message', onMessage);
  await client.subscribeAsync(topic, { qos: 1 });
  return {
    currentKeyId: () => stored,
    idle: () => chain,
    async stop() {
      client.off('message', onMessage);
      await chain;
    },
  };
}
