/**
 * The `blackcloud` command tree (commander). Commands write through the injected `CliIo`; errors propagate to
 * the caller (`cli/main.ts`), which prints them as one line and exits non-zero.
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

/**
 * Descriptions are written as source-width lines; commander wraps them again to the terminal, so a hard line
 * break inside a sentence shows as a ragged short line. Join such breaks into spaces and keep the intended ones:
 * after a sentence or a colon, and before an indented or listed line.
 */
export function reflowDescription(text: string): string {
  return text.replace(/([^.:!?\n])\n(?=[^\s-])/g, '$1 ');
}

function reflowTree(command: Command): void {
  command.description(reflowDescription(command.description()));
  for (const sub of command.commands) reflowTree(sub);
}

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
  reflowTree(program);
  return program;
}
