/**
 * `blackcloud pub`: knock, connect over mutual TLS, publish one message, disconnect.
 */
import type { Command } from 'commander';
import type { CliIo } from '../cli-io.ts';
import { UsageError } from '../usage-error.ts';
import { closeSession, openSession, type SessionFlags } from './session.ts';

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
      'Knock for the device, connect to the broker over mutual TLS (retrying for a few seconds while the\n' +
        'firewall opens), publish one message and disconnect.\n' +
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
    .option('--timeout <seconds>', 'give up connecting after this many seconds', '10')
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
      const session = await openSession(flags, io, false);
      try {
        await session.client.publishAsync(session.topic, flags.message ?? '', {
          qos,
          retain: flags.retain === true,
        });
      } finally {
        await closeSession(session.client);
      }
      io.out(
        flags.json
          ? JSON.stringify({ deviceId: session.config.deviceId, topic: session.topic, qos, published: true })
          : `published to ${session.topic} as ${session.config.deviceId}`,
      );
    });
}
