/**
 * `blackcloud sub`: knock, connect over mutual TLS, subscribe and print messages (all of them, or `--count N`).
 * The session outlives the grant: once connected, closing the firewall does not cut it. While connected it also
 * receives the device's new SPA keys (key-listener.ts): stored in the device file, acknowledged, never printed.
 */
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { type KeyListenerEvent, listenForKeys } from '../../device-client/index.ts';
import { keyTopic } from '../../functions/core/topics.ts';
import type { CliIo } from '../cli-io.ts';
import { UsageError } from '../usage-error.ts';
import { closeSession, openSession, type SessionFlags } from './session.ts';

interface SubFlags extends SessionFlags {
  readonly count?: string;
  readonly qos?: string;
}

function countOf(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[1-9][0-9]{0,8}$/.test(text)) {
    throw new UsageError('--count', `must be a positive integer; received ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function describeKeyEvent(event: KeyListenerEvent, file: string): string {
  switch (event.type) {
    case 'stored':
      return `new SPA key ${event.keyId} stored in ${file}`;
    case 'acknowledged':
      return `new SPA key ${event.keyId} acknowledged; the next knock uses it`;
    case 'ignored':
      return `a key message was ignored (${event.reason})`;
    case 'failed':
      return `new SPA key ${event.keyId} NOT stored (${event.error}); the old key keeps working`;
  }
}

function qosOf(text: string | undefined): 0 | 1 {
  if (text === undefined || text === '1') return 1;
  if (text === '0') return 0;
  throw new UsageError('--qos', `must be 0 or 1; received ${JSON.stringify(text)}`);
}

export function registerSub(program: Command, io: CliIo): void {
  program
    .command('sub')
    .summary('knock, then subscribe as a device and print messages')
    .description(
      'Knock for the device, connect to the broker over mutual TLS (retrying for a few seconds while the\n' +
        'firewall opens), subscribe and print each message as "<topic> <payload>" (or one JSON line with --json).\n' +
        'Stops after --count messages, or on Ctrl-C. "subscribed to <topic>" goes to stderr once ready.\n' +
        'A device may only use topics under blackcloud/devices/<device id>/ (wildcards + and # allowed as whole\n' +
        'levels): a relative topic such as "#" or "sensors/+" is placed there.',
    )
    .requiredOption('--device <file>', 'device config file (device.json)')
    .requiredOption('-t, --topic <topic>', 'topic filter, relative to blackcloud/devices/<device id>/')
    .option('--count <n>', 'exit after this many messages')
    .option('--qos <n>', 'QoS 0 or 1', '1')
    .option('--server <host[:port]>', 'receiver to knock (default: from the device file)')
    .option('--format <format>', 'knock format: native | fwknop (default: from the device file)')
    .option('--no-knock', 'do not knock first (the firewall is already open for this address)')
    .option('--timeout <seconds>', 'give up connecting after this many seconds', '10')
    .option('-v, --verbose', 'report the knock and each failed connect attempt on stderr')
    .option('--json', 'print each message as one JSON line {topic, message}')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  blackcloud sub --device .blackcloud/devices/demo-device/device.json -t "#"\n' +
        '  blackcloud sub --device device.json -t hello --count 1 --json',
    )
    .action(async (flags: SubFlags) => {
      const count = countOf(flags.count);
      const qos = qosOf(flags.qos);
      const session = await openSession(flags, io, true);
      const { client, topic } = session;
      const ownKeyTopic = keyTopic(session.config.deviceId);
      await listenForKeys(client, session.config, {
        randomBytes: (length) => new Uint8Array(randomBytes(length)),
        onEvent: (event) => io.err(describeKeyEvent(event, session.config.file)),
      });
      let received = 0;
      await new Promise<void>((resolve, reject) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        client.on('message', (messageTopic, payload) => {
          if (messageTopic === ownKeyTopic) return; // key messages are the key listener's, never printed
          if (count !== undefined && received >= count) return;
          received += 1;
          const text = payload.toString('utf8');
          io.out(
            flags.json ? JSON.stringify({ topic: messageTopic, message: text }) : `${messageTopic} ${text}`,
          );
          if (count !== undefined && received >= count) stop();
        });
        client.on('close', () => {
          if (count === undefined || received < count) {
            reject(
              new Error(
                `the broker closed the session to ${session.config.mqtt.url} after ${received} message(s)`,
              ),
            );
          }
        });
        client
          .subscribeAsync(topic, { qos })
          .then((granted) => {
            if (granted.some((grant) => grant.qos === 128)) {
              reject(
                new UsageError(
                  '-t, --topic',
                  `the broker refused the subscription to ${topic}; a device may only subscribe under its own namespace`,
                ),
              );
              return;
            }
            io.err(`subscribed to ${topic} as ${session.config.deviceId} (Ctrl-C to stop)`);
          })
          .catch(reject);
      }).finally(() => closeSession(client));
    });
}
