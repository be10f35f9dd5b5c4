/**
 * The public address of the local black cloud: the host name(s) or IP address(es) devices on other machines use to
 * knock and connect (`blackcloud up --public-address`, docs/local.md "A device on another machine"). The first one
 * goes into new and refreshed device files (`spa.host`, `mqtt.url`); all of them go into the broker certificate's
 * subjectAltNames, so a device may be pointed at any of them with hostname verification intact.
 *
 * Contract:
 * - `checkPublicAddress(text)` is pure: it returns the canonical form (DNS names lower-case, IPv6 compressed,
 *   brackets dropped) or `{ problem }`, one phrase saying what is wrong and how to fix it. Accepted: an IPv4 or
 *   IPv6 literal that is neither a wildcard nor multicast/broadcast, or a DNS name (RFC 1123 labels, not all
 *   numeric). Refused: ports, URLs, zone indexes, empty text.
 * - `splitPublicAddresses` splits comma-separated values, so `--public-address a,b` equals `--public-address a
 *   --public-address b`; `brokerNames` splits addresses into the DNS and IP subjectAltNames.
 * - The data directory remembers the addresses in force (`public-address.json`, 0600): `readPublicAddresses`
 *   returns them (undefined when the file is missing) or throws `PublicAddressFileError` for a damaged file;
 *   `savePublicAddresses` replaces the file atomically when the list differs, and removes it for an empty list.
 *   It returns whether it changed anything.
 */
import { readFile, rm } from 'node:fs/promises';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import type { DataDirLayout } from './data-dir.ts';
import { writeFileAtomic } from './device-file.ts';

export const PUBLIC_ADDRESS_EXAMPLE = '192.168.1.20 (or a DNS name such as blackcloud.lan)';

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

export type PublicAddressCheck = { readonly address: string } | { readonly problem: string };

function canonicalIpv6(address: string): string {
  return new URL(`http://[${address}]/`).hostname.replace(/^\[|\]$/g, '');
}

export function checkPublicAddress(text: string): PublicAddressCheck {
  const trimmed = text.trim();
  if (trimmed === '')
    return { problem: `is empty; fix: give the address devices dial, e.g. ${PUBLIC_ADDRESS_EXAMPLE}` };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed)) {
    return {
      problem: `is a URL; fix: give only the host (e.g. ${PUBLIC_ADDRESS_EXAMPLE}); the ports are --spa-port and --mqtt-port`,
    };
  }
  const unbracketed = /^\[.*\]$/.test(trimmed) ? trimmed.slice(1, -1) : trimmed;
  if (unbracketed.includes('%')) {
    return {
      problem: 'has an IPv6 zone index, which no certificate can name; fix: give a global or ULA address',
    };
  }
  const family = isIP(unbracketed);
  if (family === 4) {
    if (unbracketed === '0.0.0.0') {
      return {
        problem: `is a wildcard (it is for --host); fix: give the address of this machine that devices dial, e.g. ${PUBLIC_ADDRESS_EXAMPLE}`,
      };
    }
    const first = Number(unbracketed.split('.')[0]);
    if (unbracketed === '255.255.255.255' || (first >= 224 && first <= 239)) {
      return { problem: 'is a broadcast or multicast address; fix: give a unicast address of this machine' };
    }
    return { address: unbracketed };
  }
  if (family === 6) {
    const canonical = canonicalIpv6(unbracketed);
    if (canonical === '::') {
      return {
        problem: `is a wildcard (it is for --host); fix: give the address of this machine that devices dial, e.g. ${PUBLIC_ADDRESS_EXAMPLE}`,
      };
    }
    if (canonical.startsWith('ff')) return { problem: 'is a multicast address; fix: give a unicast address' };
    return { address: canonical };
  }
  if (/^[^:]+:[0-9]*$/.test(trimmed) || /^\[.*\]:[0-9]*$/.test(trimmed)) {
    return {
      problem: 'has a port; fix: give only the host, the ports are --spa-port and --mqtt-port',
    };
  }
  const name = trimmed.toLowerCase().replace(/\.$/, '');
  const labels = name.split('.');
  if (name.length > 253 || !labels.every((label) => DNS_LABEL.test(label))) {
    return {
      problem: `is neither an IP address nor a DNS name (letters, digits and - in dot-separated labels); fix: give the address devices dial, e.g. ${PUBLIC_ADDRESS_EXAMPLE}`,
    };
  }
  if (labels.every((label) => /^[0-9]+$/.test(label))) {
    return {
      problem: 'is not a valid IPv4 address (four numbers 0..255); fix: correct it, e.g. 192.168.1.20',
    };
  }
  return { address: name };
}

/** `["a,b", "c"]` → `["a", "b", "c"]` (empty pieces kept, so that `a,,b` is refused as empty). */
export function splitPublicAddresses(values: readonly string[]): string[] {
  return values.flatMap((value) => value.split(','));
}

/** Loopback names: 127.0.0.0/8, ::1 and localhost. */
export function isLoopbackAddress(address: string): boolean {
  if (isIPv4(address)) return address.startsWith('127.');
  if (isIPv6(address)) return canonicalIpv6(address) === '::1';
  return address === 'localhost' || address.endsWith('.localhost');
}

/** The broker certificate's subjectAltNames for these addresses. */
export function brokerNames(addresses: readonly string[]): { dnsNames: string[]; ipAddresses: string[] } {
  return {
    dnsNames: addresses.filter((address) => isIP(address) === 0),
    ipAddresses: addresses.filter((address) => isIP(address) !== 0),
  };
}

export class PublicAddressFileError extends Error {
  override readonly name = 'PublicAddressFileError';
  readonly path: string;

  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super(`${path}: ${message}`, options);
    this.path = path;
  }
}

export async function readPublicAddresses(layout: DataDirLayout): Promise<string[] | undefined> {
  const path = layout.publicAddressFile;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new PublicAddressFileError(
      path,
      `cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)}); fix its permissions`,
      { cause: error },
    );
  }
  const fix =
    'fix: run "blackcloud up --public-address HOST" to rewrite it, or --no-public-address to remove it';
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new PublicAddressFileError(path, `is not valid JSON; ${fix}`, { cause: error });
  }
  const list = (value as { publicAddresses?: unknown } | null)?.publicAddresses;
  if (!Array.isArray(list) || list.length === 0 || !list.every((item) => typeof item === 'string')) {
    throw new PublicAddressFileError(path, `must be {"publicAddresses": ["HOST", ...]}; ${fix}`);
  }
  const addresses: string[] = [];
  for (const item of list as string[]) {
    const checked = checkPublicAddress(item);
    if ('problem' in checked) {
      throw new PublicAddressFileError(path, `address ${JSON.stringify(item)} ${checked.problem}; or ${fix}`);
    }
    addresses.push(checked.address);
  }
  return addresses;
}

export async function savePublicAddresses(
  layout: DataDirLayout,
  addresses: readonly string[],
): Promise<boolean> {
  const current = await readPublicAddresses(layout).catch(() => null);
  if (addresses.length === 0) {
    if (current === undefined) return false;
    await rm(layout.publicAddressFile, { force: true });
    return true;
  }
  if (current !== null && current !== undefined && current.join(',') === addresses.join(',')) return false;
  await writeFileAtomic(
    layout.publicAddressFile,
    `${JSON.stringify({ publicAddresses: addresses }, null, 2)}\n`,
  );
  return true;
}
