/**
 * The device side of key rotation (docs/key-lifecycle.md): while connected, receive new SPA keys on the
 * device's own key topic, store each durably, and only then acknowledge it with proof of possession.
 *
 * Contract:
 * - Subscribes to `blackcloud/keys/<deviceId>` (QoS 1). Each offer is handled one at a time, in arrival order.
 * - Offers are sealed (BKO1, functions/core/sealed-key-offer.ts, docs/protocol.md [KO-1]..[KO-8]) under the
 *   device's current key, with its device id in the AAD; the listener opens them with the key it holds.
 * - An offer that does not open is ignored (reported through `onEvent` with the reason, nothing stored, nothing
 *   sent), except [KO-8]: a well-formed offer sealed under another key id than the device's current one (the
 *   controller re-sends an offer sealed under the key this device has already replaced, because its ack was lost)
 *   is answered by a fresh ack of the current key ('reacknowledged'), which proves possession of that key and
 *   nothing more. The operator's session notice, which shares the topic (functions/core/session-notice.ts, JSON:
 *   first byte `{`), is not an offer and is left to connectDevice without an event.
 * - A valid offer: `storeNativeKey` writes the key into the device file (atomic, 0600) BEFORE the ack is
 *   published; from then on offers are opened with the new key.
 * - The ack (QoS 1, on `blackcloud/keys/<deviceId>/ack`) carries a fresh 16-byte nonce and
 *   HMAC-SHA256(new key, label | key id | nonce).
 * - Key material never reaches `onEvent` or any log: events carry key ids only.
 */
import type { MqttClient } from 'mqtt';
import type { DeviceConfig } from '../functions/core/device-config.ts';
import { ACK_NONCE_LENGTH, encodeKeyAck, makeKeyAck } from '../functions/core/key-messages.ts';
import { openKeyOffer, type SealingKey } from '../functions/core/sealed-key-offer.ts';
import { parseSessionNotice } from '../functions/core/session-notice.ts';
import { keyAckTopic, keyTopic } from '../functions/core/topics.ts';
import { storeNativeKey } from './key-store.ts';

export type KeyListenerEvent =
  | { readonly type: 'stored'; readonly keyId: number }
  | { readonly type: 'acknowledged'; readonly keyId: number }
  /** [KO-8]: an offer sealed under a key this device no longer holds; its current key acknowledged again. */
  | { readonly type: 'reacknowledged'; readonly keyId: number }
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
  let current: SealingKey | undefined = config.spa.native;
  let chain: Promise<void> = Promise.resolve();
  const emit = (event: KeyListenerEvent): void => {
    try {
      options.onEvent?.(event);
    } catch {
      // observers never break the listener
    }
  };

  const acknowledge = async (held: SealingKey): Promise<void> => {
    const ack = makeKeyAck(held.key, held.keyId, options.randomBytes(ACK_NONCE_LENGTH));
    await client.publishAsync(keyAckTopic(config.deviceId), encodeKeyAck(ack), { qos: 1 });
  };

  const handle = async (payload: Uint8Array): Promise<void> => {
    if (parseSessionNotice(payload).ok) return;
    const offer = openKeyOffer(current === undefined ? [] : [current], config.deviceId, payload);
    if (!offer.ok) {
      if (offer.reason === 'unknown-sealing-key' && current !== undefined) {
        const held = current; // [KO-8]
        try {
          await acknowledge(held);
          emit({ type: 'reacknowledged', keyId: held.keyId });
        } catch (error) {
          emit({
            type: 'failed',
            keyId: held.keyId,
            error: error instanceof Error ? error.message : String(error),
          });
        }
        return;
      }
      emit({ type: 'ignored', reason: offer.reason });
      return;
    }
    const { keyId, key } = offer.value;
    try {
      if (current?.keyId !== keyId) {
        await storeNativeKey(config.file, keyId, key); // durable before the ack
        current = { keyId, key };
        emit({ type: 'stored', keyId });
      }
      await acknowledge({ keyId, key });
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
    currentKeyId: () => current?.keyId,
    idle: () => chain,
    async stop() {
      client.off('message', onMessage);
      await chain;
    },
  };
}
