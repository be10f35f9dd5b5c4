/**
 * `blackcloud sub`: knock, connect over mutual TLS, subscribe and print messages (all of them, or `--count N`).
 * The session outlives the grant: once connected, closing the firewall does not cut it. When the session drops
 * (broker or receiver restart, network loss) it knocks again and reconnects by itself (connectDevice: full-jitter
 * backoff), and the subscription is made again. It exits non-zero, saying why, when the operator disables or
 * removes the device (the broker's session notice), when the broker refuses a reconnect, or after
 * `--give-up-after` seconds without a session. While connected it also receives the device's new SPA keys
 * (key-listener.ts): stored in the device file, acknowledged, never printed; the next knock uses the new key.
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { KeyListenerEvent } from '../../device-client/index.ts';
import { keyTopic } from '../../functions/core/topics.ts';
import type { CliIo } from '../cli-io.ts';
import { exitPaths } from '../exit-paths.ts';
import { UsageError } from '../usage-error.ts';
import { closeSession, openSession, type SessionFlags } from './session.ts';

interface SubFlags extends SessionFlags {
  readonly count?: string;
  readonly qos?: string;
  readonly giveUpAfter?: string;
}

/** `--give-up-after <seconds>`: 0 = never, else 1..86400. Default 300. */
function giveUpAfterMs(text: string | undefined): number | undefined {
  const value = text ?? '300';
  if (!/^[0-9]{1,5}$/.test(value) || Number(value) > 86_400) {
    throw new UsageError(
      '--give-up-after',
      `must be a whole number of seconds in 0..86400 (0 = never give up); received ${JSON.stringify(value)}`,
    );
  }
  return value === '0' || Number(value) === 0 ? undefined : Number(value) * 1000;
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
    case 'reacknowledged':
      return `SPA key ${event.keyId} acknowledged again (an offer sealed under the key it replaced: its first ack was lost)`;
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
      'Knock for the device, connect to the broker over mutual TLS (retrying for up to --timeout seconds while\n' +
        'the firewall opens), subscribe and print each message as "<topic> <payload>" (or one JSON line with --json).\n' +
        'Stops after --count messages, or on Ctrl-C. "subscribed to <topic>" goes to stderr once ready.\n' +
        'If the session drops (broker or receiver restart, network loss) it knocks again, reconnects by itself\n' +
        'with backoff and subscribes again. It exits non-zero with the reason when the operator disables or removes\n' +
        'the device, when the broker refuses it, or after --give-up-after seconds without a session.\n' +
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
    .option('--timeout <seconds>', 'give up the first connection after this many seconds', '10')
    .option(
      '--give-up-after <seconds>',
      'once connected, exit after this many seconds without a session (0 = keep trying forever)',
      '300',
    )
    .option('-v, --verbose', 'report every knock, failed connect attempt and scheduled reconnect on stderr')
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
      const giveUpAfter = giveUpAfterMs(flags.giveUpAfter);
      const deviceFile = resolve(flags.device ?? 'device.json');
      const session = await openSession(flags, io, true, {
        keyRotation: true,
        ...(giveUpAfter === undefined ? {} : { giveUpAfterMs: giveUpAfter }),
        onEvent: (event) => {
          if (event.type === 'key') io.err(describeKeyEvent(event.event, deviceFile));
          else if (event.type === 'offline') {
            io.err('connection to the broker lost; knocking again and reconnecting (Ctrl-C to stop)');
          } else if (event.type === 'connect' && event.connection > 1) {
            io.err(
              `reconnected after ${event.offlineMs ?? 0} ms (${event.attempt} attempts in all); ` +
                `subscribed again to ${session.topic}`,
            );
          }
        },
      });
      const { client, topic } = session;
      const ownKeyTopic = keyTopic(session.config.deviceId);
      let received = 0;
      let release = (): void => undefined;
      await new Promise<void>((resolve, reject) => {
        const stop = (): void => resolve();
        // Ctrl-C, SIGTERM/SIGHUP or a closed stdout (`| head`) end it cleanly (cli/exit-paths.ts).
        release = exitPaths.hold(stop, { stopWhenStdoutCloses: true });
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
        // A terminal outcome (disabled, removed, refused, unreachable for too long): its message says why.
        void client.device.closed().then((ended) => {
          if (ended === undefined) return;
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          reject(new Error(`${ended.message} (after ${received} message(s))`));
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
      }).finally(async () => {
        try {
          await closeSession(client);
        } finally {
          release();
        }
      });
    });
}
