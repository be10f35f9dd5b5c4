/**
 * `blackcloud devices add|list|show|disable|enable|remove`: the device directory of the local black cloud (the
 * data directory of `blackcloud up`, default) or of the deployed stack (`--aws`). A running `up` picks up
 * changes by itself (it watches the devices file; disable/remove also reach it through its control socket).
 * The work is done by the fleet (cli/fleet/, commands in ./fleet.ts).
 */
import type { Command } from 'commander';
import type { CliIo } from '../cli-io.ts';
import { addDevices, listDevices, registerDeviceFleetCommands, withFleetFlags } from './fleet.ts';

export function registerDevices(program: Command, io: CliIo): void {
  const devices = program
    .command('devices')
    .summary('enrol, list, disable and remove devices (local, or --aws)')
    .description(
      'Manage the fleet: the local data directory used by "blackcloud up" (default), or the deployed stack on\n' +
        'AWS with --aws / --stack NAME (AWS IoT things + the devices table; standard credential chain).',
    )
    .addHelpText(
      'after',
      '\nExamples:\n  blackcloud devices add sensor-1\n  blackcloud devices add legacy-1 --format fwknop\n' +
        '  blackcloud devices add --count 100 --prefix sensor-\n  blackcloud devices list --json\n' +
        '  blackcloud devices disable sensor-042\n  blackcloud devices add dev-1 --aws --ca ~/.blackcloud/ca',
    );

  withFleetFlags(
    devices
      .command('add')
      .summary('add devices and write their bundles (config, keys, client certificate)')
      .description(
        'Add devices and write what each needs (its bundle) into <data-dir>/devices/NAME/ (local) or\n' +
          '<out>/NAME/ (AWS): device.json (0600: SPA key, receiver and broker addresses), client.crt/client.key\n' +
          '(CN = NAME), ca.crt. With --format fwknop it also gets a Rijndael key and an HMAC key (fwknop --key-gen\n' +
          'sizes), and the fwknop command line and ~/.fwknoprc stanza that knock this receiver are printed (and\n' +
          'saved as NAME/fwknoprc). A running "blackcloud up" picks the devices up without a restart.\n' +
          'NAME: 1..64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit.\n' +
          'Several names or --count N enrol in bulk, with a progress bar: devices that already exist are skipped,\n' +
          'so running the same command again after an interruption finishes the job; a device whose enrolment\n' +
          'failed leaves nothing behind.',
      )
      .argument(
        '[names...]',
        'device ids (each becomes the certificate CN and the topic level blackcloud/devices/NAME/)',
      )
      .option('--count <n>', 'enrol N devices named PREFIX1..PREFIXN (zero-padded, e.g. sensor-001)')
      .option('--prefix <prefix>', 'name prefix for --count')
      .option('--format <format>', 'native (BC1, default) | fwknop (the standard fwknop client)', 'native')
      .option(
        '--transport <transport>',
        'tls (default: mutual TLS, a client certificate) | plain (for devices that cannot do TLS: no certificate;\n' +
          "plain MQTT on the broker's plain listener (up --plain-port; on AWS the plainListener setting), dark like\n" +
          'the TLS port, logging in with a one-time password derived from each BC1 knock; no reusable secret on the\n' +
          'wire, but the session itself is NOT encrypted: anyone on the path reads the payloads and can hijack the\n' +
          'session after CONNECT; docs/threat-model.md "The plain profile"). Needs native knocks (not --format fwknop)',
        'tls',
      )
      .option(
        '--ports <list>',
        'what the device may open, e.g. tcp/8883 (default: the broker port; plain: the plain port)',
      )
      .option('--max-open-seconds <n>', "upper bound of this device's grants (default 300)")
      .option('--concurrency <n>', 'AWS: devices enrolled at the same time (default 8)')
      .option('--ca <dir>', 'AWS: your CA directory with ca.crt and ca.key (default ~/.blackcloud/ca)')
      .option(
        '--json',
        'print one JSON object per created device (includes the fwknop keys for --format fwknop)',
      )
      .addHelpText(
        'after',
        '\nExamples:\n' +
          '  blackcloud devices add sensor-1\n' +
          '  blackcloud devices add sensor-2 --ports tcp/8883 --max-open-seconds 60\n' +
          '  blackcloud devices add legacy-1 --format fwknop --data-dir /var/lib/blackcloud\n' +
          '  blackcloud devices add tiny-1 --transport plain     # then: blackcloud up --plain-port 1883\n' +
          '  blackcloud devices add --count 100 --prefix sensor-\n' +
          '  blackcloud devices add --count 1000 --prefix meter- --aws --ca ~/.blackcloud/ca --out ./bundles\n' +
          '  blackcloud devices add tiny-1 --aws --transport plain',
      ),
  ).action((names: string[], options: Parameters<typeof addDevices>[1]) => addDevices(names, options, io));

  withFleetFlags(
    devices
      .command('list')
      .summary('list the devices')
      .option('--json', 'print one JSON object per device')
      .addHelpText(
        'after',
        '\nExamples:\n  blackcloud devices list\n  blackcloud devices list --data-dir ~/blackcloud-lab --json\n  blackcloud devices list --aws',
      ),
  ).action((options: Parameters<typeof listDevices>[0]) => listDevices(options, io));

  registerDeviceFleetCommands(devices, io);
}
