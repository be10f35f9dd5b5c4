/**
 * Access entries as people write them: `tcp/8883`, `udp/5683` (the fwknop `-A` syntax).
 *
 * Contract: `parseAccessSpec` never throws; it accepts exactly `tcp|udp` `/` a decimal port 1..65535 (case-insensitive
 * protocol, no spaces, no leading zeros) and returns `undefined` for anything else. `formatAccessSpec` is its inverse.
 * Pure.
 */
import { PORT_MAX, PORT_MIN } from '../../spa/limits.ts';
import type { AccessEntry } from '../../spa/types.ts';

/** The canonical written form of one access entry (lower-case protocol, no leading zeros); stated once. */
export const ACCESS_SPEC_PATTERN = /^(tcp|udp)\/([1-9][0-9]{0,4})$/;

export function parseAccessSpec(text: string): AccessEntry | undefined {
  const match = ACCESS_SPEC_PATTERN.exec(text.toLowerCase());
  if (match === null) return undefined;
  const port = Number(match[2]);
  if (port < PORT_MIN || port > PORT_MAX) return undefined;
  return { protocol: match[1] as AccessEntry['protocol'], port };
}

export function formatAccessSpec(entry: AccessEntry): string {
  return `${entry.protocol}/${entry.port}`;
}
