/**
 * The `blackcloud` command tree (commander). Commands write through the injected `CliIo`; errors propagate to
 * the caller (`cli.ts`), which prints them as one line and exits non-zero.
 */
import { Command } from 'commander';
import type { CliIo } from './cli-io.ts';
import { registerDevices } from './commands/devices.ts';
import { registerAudit, registerGrants } from './commands/fleet.ts';
import { registerKeys } from './commands/keys.ts';
import { registerKnock } from './commands/knock.ts';
import { registerPub } from './commands/pub.ts';
import { registerSub } from './commands/sub.ts';
import { registerUp } from './commands/up.ts';

export function createProgram(io: CliIo): Command {
  const program = new Command('blackcloud')
    .description(
      'A black cloud in front of an MQTT broker: devices knock with one Single Packet Authorization (SPA)\n' +
        "datagram, and only then does the firewall open, for that device's address, for a few seconds.",
    )
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({
      writeOut: (text) => io.out(text.replace(/\n$/, '')),
      writeErr: (text) => io.err(text.replace(/\n$/, '')),
    })
    .exitOverride()
    .addHelpText(
      'after',
      '\nQuick start:\n' +
        '  blackcloud up                      # local receiver + gate + broker, creates a demo device\n' +
        '  blackcloud sub --device .blackcloud/devices/demo-device/device.json -t "#"\n' +
        '  blackcloud pub --device .blackcloud/devices/demo-device/device.json -t hello -m hi\n' +
        '\nRun "blackcloud <command> --help" for the options and examples of each command.',
    );
  registerUp(program, io);
  registerKnock(program, io);
  registerPub(program, io);
  registerSub(program, io);
  registerDevices(program, io);
  registerKeys(program, io);
  registerGrants(program, io);
  registerAudit(program, io);
  for (const command of program.commands) {
    command.exitOverride().configureOutput({
      writeOut: (text) => io.out(text.replace(/\n$/, '')),
      writeErr: (text) => io.err(text.replace(/\n$/, '')),
    });
    for (const sub of command.commands) sub.exitOverride();
  }
  return program;
}
