/**
 * `blackcloud knock`: send one SPA knock for a device (native BC1 by default) and report what was sent.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { buildKnock, type Knock, sendDatagram } from '../../device-client/index.ts';
import { formatAccessSpec } from '../../functions/core/access-spec.ts';
import type { DeviceConfig } from '../../functions/core/device-config.ts';
import type { CliIo } from '../cli-io.ts';
import { type DeviceFlags, knockTarget, loadDeviceFromFlags } from './device-options.ts';

export interface KnockResult {
  readonly deviceId: string;
  readonly format: Knock['format'];
  readonly server: string;
  readonly port: number;
  readonly bytes: number;
  readonly access: readonly string[];
}

const systemKnockIo = {
  now: () => Date.now(),
  randomBytes: (length: number) => new Uint8Array(randomBytes(length)),
};

/** Builds and sends one knock; `savePacket` also writes the datagram to a file (for replay experiments). */
export async function knockAs(
  config: DeviceConfig,
  flags: DeviceFlags,
  savePacket?: string,
): Promise<KnockResult> {
  const target = knockTarget(config, flags);
  const knock = buildKnock(config, systemKnockIo, target.format);
  if (savePacket !== undefined) await writeFile(savePacket, knock.bytes, { mode: 0o600 });
  const sent = await sendDatagram(target.host, target.port, knock.bytes);
  return {
    deviceId: config.deviceId,
    format: knock.format,
    server: sent.address,
    port: sent.port,
    bytes: sent.bytes,
    access: config.access.map(formatAccessSpec),
  };
}

export function describeKnock(result: KnockResult): string {
  return (
    `knocked ${result.server}:${result.port} as ${result.deviceId} ` +
    `(${result.format}, ${result.bytes} bytes, asks ${result.access.join(',')}); the receiver never answers`
  );
}

export function registerKnock(program: Command, io: CliIo): void {
  program
    .command('knock')
    .summary('send one SPA knock for a device')
    .description(
      'Send one Single Packet Authorization knock (UDP) for the device in --device. The receiver never answers;\n' +
        "if the knock is valid it opens the broker port for this machine's address for a short time.\n" +
        "Native (BC1) knocks carry the current time, a random nonce and the device's access list.",
    )
    .requiredOption('--device <file>', 'device config file (device.json)')
    .option('--server <host[:port]>', 'receiver to knock (default: spa.host:spa.port from the device file)')
    .option('--format <format>', 'knock format: native | fwknop (default: spa.format from the device file)')
    .option('--save-packet <file>', 'also write the datagram to this file (mode 0600)')
    .option('--json', 'print the result as one JSON line')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  blackcloud knock --device .blackcloud/devices/demo-device/device.json\n' +
        '  blackcloud knock --device device.json --server 203.0.113.7:62201\n' +
        '  blackcloud knock --device device.json --format fwknop --json',
    )
    .action(async (options: DeviceFlags & { savePacket?: string; json?: boolean }) => {
      const config = await loadDeviceFromFlags(options);
      const result = await knockAs(config, options, options.savePacket);
      io.out(options.json ? JSON.stringify(result) : describeKnock(result));
    });
}
