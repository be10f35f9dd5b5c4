/**
 * A client process of the broker-sessions bench (bench/broker/session-bench.ts starts several): it holds one
 * mqtt.js session over mutual TLS per assigned device, each from its device's loopback source address with its
 * own certificate, and keeps it alive (mqtt.js PINGREQs at the configured keepalive) with a trickle of QoS 1
 * telemetry on the device's own topic (`blackcloud/devices/<id>/telemetry`, which its dynsec role allows), each
 * device at its own random phase. Driven by the parent over IPC (bench/broker/worker-protocol.ts): open, drop
 * (cut every TCP connection without DISCONNECT), burst, stats, exit. Run only as a child with an IPC channel.
 */
import type { MqttClient } from 'mqtt';
import { deviceTopic } from '../../functions/core/topics.ts';
import { connectOnce } from '../support/mqtt-device.ts';
import type {
  AssignedDevice,
  OpenResult,
  WorkerCommand,
  WorkerReply,
  WorkerStats,
} from './worker-protocol.ts';

interface Session {
  readonly device: AssignedDevice;
  readonly topic: string;
  client?: MqttClient;
  timer?: NodeJS.Timeout;
  /** Set while the parent cuts it, so its close is not counted as lost. */
  dropping: boolean;
}

type Init = Extract<WorkerCommand, { type: 'init' }>;

const TELEMETRY_PAYLOAD = Buffer.from(JSON.stringify({ t: 21.5, v: 3.3, seq: 0, pad: 'x'.repeat(24) }));

let config: Init | undefined;
let sessions: Session[] = [];
const counts = { lost: 0, published: 0, acked: 0, publishFailed: 0 };

function publish(session: Session): void {
  const client = session.client;
  if (client === undefined || !client.connected) return;
  counts.published++;
  client.publish(session.topic, TELEMETRY_PAYLOAD, { qos: 1 }, (error) => {
    if (error === undefined || error === null) counts.acked++;
    else counts.publishFailed++;
  });
}

function startTelemetry(session: Session, perMinute: number): void {
  if (perMinute <= 0) return;
  const periodMs = 60_000 / perMinute;
  session.timer = setTimeout(() => {
    publish(session);
    session.timer = setInterval(() => publish(session), periodMs);
  }, Math.random() * periodMs);
}

function stopTelemetry(session: Session): void {
  if (session.timer !== undefined) clearTimeout(session.timer);
  session.timer = undefined;
}

async function open(count: number, concurrency: number): Promise<OpenResult> {
  const init = config;
  if (init === undefined) throw new Error('open before init');
  const pending = sessions.slice(0, count).filter((session) => session.client === undefined);
  const latenciesMs: number[] = [];
  const errors: Record<string, number> = {};
  const started = performance.now();
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < pending.length) {
      const session = pending[next++]!;
      const t0 = performance.now();
      try {
        const client = await connectOnce({
          port: init.port,
          tls: session.device.tls,
          localAddress: session.device.localAddress,
          clientId: session.device.id,
          timeoutMs: init.connectTimeoutMs,
          keepaliveSeconds: init.keepaliveSeconds,
        });
        latenciesMs.push(performance.now() - t0);
        session.client = client;
        session.dropping = false;
        client.on('close', () => {
          if (session.client !== client) return;
          session.client = undefined;
          stopTelemetry(session);
          if (!session.dropping) counts.lost++;
        });
        startTelemetry(session, init.telemetryPerMinute);
      } catch (error) {
        const message = (error as Error).message;
        errors[message] = (errors[message] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
  return { latenciesMs, errors, elapsedMs: performance.now() - started };
}

async function drop(): Promise<void> {
  await Promise.all(
    sessions.map((session) => {
      const client = session.client;
      if (client === undefined) return Promise.resolve();
      session.dropping = true;
      stopTelemetry(session);
      return new Promise<void>((resolve) => {
        client.once('close', () => resolve());
        // No DISCONNECT: the broker sees the TCP connection go, as in an outage or a device reset.
        client.stream.destroy();
        client.end(true);
        setTimeout(resolve, 2000);
      });
    }),
  );
}

async function burst(): Promise<{ messages: number; failed: number; elapsedMs: number }> {
  const started = performance.now();
  const held = sessions.filter((session) => session.client?.connected === true);
  const outcomes = await Promise.all(
    held.map(
      (session) =>
        new Promise<boolean>((resolve) => {
          session.client!.publish(session.topic, TELEMETRY_PAYLOAD, { qos: 1 }, (error) =>
            resolve(error === undefined || error === null),
          );
        }),
    ),
  );
  return {
    messages: outcomes.length,
    failed: outcomes.filter((ok) => !ok).length,
    elapsedMs: performance.now() - started,
  };
}

function stats(): WorkerStats {
  const held = sessions.filter((session) => session.client?.connected === true);
  const addresses = new Set(
    held.map((session) => (session.client!.stream as { localAddress?: string }).localAddress),
  );
  return {
    held: held.length,
    ...counts,
    localAddresses: [...addresses].filter((address): address is string => address !== undefined),
  };
}

async function handle(command: WorkerCommand & { id: number }): Promise<WorkerReply> {
  const id = command.id;
  switch (command.type) {
    case 'init':
      config = command;
      sessions = command.devices.map((device) => ({
        device,
        topic: deviceTopic(device.id, 'telemetry'),
        dropping: false,
      }));
      return { id, type: 'ready' };
    case 'open':
      return { id, type: 'opened', result: await open(command.count, command.concurrency) };
    case 'drop':
      await drop();
      return { id, type: 'dropped' };
    case 'burst':
      return { id, type: 'burst', result: await burst() };
    case 'stats':
      return { id, type: 'stats', stats: stats() };
    case 'exit':
      for (const session of sessions) {
        session.dropping = true;
        stopTelemetry(session);
        session.client?.end(true);
      }
      setTimeout(() => process.exit(0), 100);
      return { id, type: 'dropped' };
  }
}

if (process.send === undefined) {
  console.error(
    'bench/broker/session-worker.ts runs only as a child process of bench/broker/session-bench.ts',
  );
  process.exit(2);
}
process.on('message', (message: WorkerCommand & { id: number }) => {
  handle(message).then(
    (reply) => process.send?.(reply),
    (error: unknown) => process.send?.({ id: message.id, type: 'error', message: String(error) }),
  );
});
// The parent going away ends this process too.
process.on('disconnect', () => process.exit(0));
