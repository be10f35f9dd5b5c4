/**
 * The controller's lazy broker session (the AWS receiver's: its broker may boot later): it resolves before the
 * broker exists, refuses to publish while disconnected, then connects by itself, subscribes to the acks and
 * publishes, against a real Mosquitto started afterwards on the port it was dialling.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONTROLLER_IDENTITY, keyAckTopic, keyTopic } from '../../../functions/core/topics.ts';
import {
  connectControllerSession,
  type RunningControllerSession,
} from '../../../functions/key-rotation/controller-session.ts';
import { ensureLocalPki, issueCertificate, loadPem, type Pem } from '../../../functions/pki/local-ca.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { freePort, removeDir, tempDir, waitFor } from '../local/helpers.ts';

let work: string | undefined;
let mosquitto: RunningMosquitto | undefined;
let session: RunningControllerSession | undefined;
let device: MqttClient | undefined;

beforeAll(async () => {
  work = await tempDir('bc7-session');
});

afterAll(async () => {
  await device?.endAsync(true);
  await session?.close();
  await mosquitto?.stop();
  await removeDir(work);
});

describe('lazy controller session', () => {
  it('waits for a broker that starts later, then subscribes to acks and publishes', async () => {
    const pkiDir = `${work}/pki`;
    const pki = await ensureLocalPki(pkiDir);
    const ca = await loadPem(pki.caCert, pki.caKey);
    const controller = await issueCertificate(ca, { commonName: CONTROLLER_IDENTITY, kind: 'client' });
    const port = await freePort();
    const acks: string[] = [];
    session = await connectControllerSession({
      url: `mqtts://127.0.0.1:${port}`,
      ca: ca.cert,
      cert: controller.cert,
      key: controller.key,
      lazy: true,
      reconnectMs: 100,
      onMessage: (topic) => acks.push(topic),
    });
    await expect(session.publish(keyTopic('dev-x'), 'offer')).rejects.toThrow(
      `the controller session to mqtts://127.0.0.1:${port} is not connected`,
    );

    mosquitto = await startMosquitto(pkiDir, work!, { port });
    await waitFor(() => (session!.client.connected ? true : undefined), 'the session to connect by itself');
    const tls: Pem = await issueCertificate(ca, { commonName: 'dev-x', kind: 'client' });
    device = await mqtt.connectAsync(
      `mqtts://127.0.0.1:${port}`,
      {
        ca: ca.cert,
        cert: tls.cert,
        key: tls.key,
        rejectUnauthorized: true,
        reconnectPeriod: 0,
        protocolVersion: 4,
      },
      false,
    );
    // The ack subscription was made on connect: the device's ack reaches the controller.
    await waitFor(async () => {
      await device!.publishAsync(keyAckTopic('dev-x'), 'ack', { qos: 1 });
      return acks.length > 0 ? true : undefined;
    }, 'an ack to reach the controller');
    expect(acks[0]).toBe(keyAckTopic('dev-x'));
    await expect(session.publish(keyTopic('dev-x'), 'offer')).resolves.toBeUndefined();
  });
});
