// meter.ts — the complete example program of docs/device-sdk.md: a meter that publishes a reading at start and
// every 10 s and obeys commands, for months, through broker restarts, receiver restarts and network loss.
// Where @blackcloud/device is installed (docs/install.md), run with: node meter.ts /etc/blackcloud/device.json
import { connectDevice, deviceTopicPrefix } from '@blackcloud/device';

const file = process.argv[2] ?? 'device.json';
const client = await connectDevice(file, {
  onEvent: (event) => {
    // Events carry ids and counts only, never a key: safe to log.
    if (event.type === 'error') console.error(`blackcloud: ${event.error.message}`);
    else console.error(`blackcloud: ${JSON.stringify(event)}`);
  },
});
const prefix = deviceTopicPrefix(client.device.config().deviceId); // blackcloud/devices/<id>/

await client.subscribeAsync(`${prefix}commands/#`, { qos: 1 });
client.on('message', (topic, payload) => {
  if (topic.startsWith(`${prefix}commands/`)) console.log(`command ${topic}: ${payload.toString()}`);
});

// QoS 1: a reading taken while offline is queued and delivered after the reconnect.
const publishReading = (): void => {
  const reading = JSON.stringify({ at: new Date().toISOString(), kWh: Math.random() * 10 });
  client.publishAsync(`${prefix}readings`, reading, { qos: 1 }).catch((error: unknown) => {
    console.error(`reading not sent: ${(error as Error).message}`);
  });
};
publishReading();
const timer = setInterval(publishReading, 10_000);

const stop = (): void => {
  clearInterval(timer);
  client.end(false, {}, () => process.exit(0));
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
