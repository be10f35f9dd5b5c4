/**
 * `blackcloud pub`: knock, connect over mutual TLS (connectDevice: a knock before each attempt), publish one
 * message, disconnect. QoS 1 waits for the broker's PUBACK (a session lost in between reconnects, knocking again,
 * and the message is sent again); `--timeout` bounds both the first connection and the wait for the
 * acknowledgement, so `pub` never hangs on an unreachable broker.
 */
import type { Command } from 'commander';
import type { CliIo } from '../cli-io.ts';
import { UsageError } from '../usage-error.ts';
import { closeSession, openSession, type SessionFlags, timeoutMs } from './session.ts';

interface PubFlags extends SessionFlags {
  readonly message?: string;
  readonly qos?: string;
  readonly retain?: boolean;
}

function qosOf(text: string | undefined): 0 | 1 {
  if (text === undefined || text === '1') return 1;
  if (text === '0') return 0;
  throw new UsageError('--qos', `must be 0 or 1; received ${JSON.stringify(text)}`);
}

export function registerPub(program: Command, io: CliIo): void {
  program
    .command('pub')
    .summary('knock, then publish one message as a device')
    .description(
      'Knock for the device, connect to the broker over mutual TLS (retrying with backoff, knocking before each\n' +
        'attempt, for up to --timeout seconds), publish one message and disconnect. With --qos 1 it exits once the\n' +
        'broker acknowledged the message; if that takes longer than --timeout, it exits non-zero.\n' +
        'A device may only use topics under blackcloud/devices/<device id>/: a relative topic such as\n' +
        '"telemetry" is placed there; an absolute topic outside it is refused.',
    )
    .requiredOption('--device <file>', 'device config file (device.json)')
    .requiredOption('-t, --topic <topic>', 'topic, relative to blackcloud/devices/<device id>/')
    .requiredOption('-m, --message <text>', 'message payload (UTF-8)')
    .option('--qos <n>', 'QoS 0 or 1', '1')
    .option('--retain', 'ask the broker to retain the message')
    .option('--server <host[:port]>', 'receiver to knock (default: from the device file)')
    .option('--format <format>', 'knock format: native | fwknop (default: from the device file)')
    .option('--no-knock', 'do not knock first (the firewall is already open for this address)')
    .option(
      '--timeout <seconds>',
      'give up after this many seconds: to connect, and again to get the acknowledgement (0 < s <= 300)',
      '10',
    )
    .option('-v, --verbose', 'report the knock and each failed connect attempt on stderr')
    .option('--json', 'print the result as one JSON line')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  blackcloud pub --device .blackcloud/devices/demo-device/device.json -t hello -m "hi"\n' +
        '  blackcloud pub --device device.json -t blackcloud/devices/demo-device/telemetry -m \'{"t":21.5}\' --qos 0',
    )
    .action(async (flags: PubFlags) => {
      const qos = qosOf(flags.qos);
      const deadlineMs = timeoutMs(flags.timeout);
      const session = await openSession(flags, io, false, { keyRotation: false, giveUpAfterMs: deadlineMs });
      const { client } = session;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const published = client.publishAsync(session.topic, flags.message ?? '', {
        qos,
        retain: flags.retain === true,
      });
      // The session ended for good (device disabled, broker gone for --timeout): its error says why.
      const ended = client.device
        .closed()
        .then((error) => (error === undefined ? new Promise<never>(() => undefined) : Promise.reject(error)));
      // Whichever loses the race below must not become an unhandled rejection.
      published.catch(() => undefined);
      ended.catch(() => undefined);
      try {
        await Promise.race([
          published,
          ended,
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () =>
                reject(
                  new Error(
                    `the broker did not acknowledge the message to ${session.topic} within ${deadlineMs / 1000} s; ` +
                      'fix: check that "blackcloud up" (or the stack) is running, or raise --timeout',
                  ),
                ),
              deadlineMs,
            );
          }),
        ]);
      } finally {
        clearTimeout(timer);
        await closeSession(client);
      }
      io.out(
        flags.json
          ? JSON.stringify({ deviceId: session.config.deviceId, topic: session.topic, qos, published: true })
          : `published to ${session.topic} as ${session.config.deviceId}`,
      );
    });
}
