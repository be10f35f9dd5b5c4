/**
 * How to knock this receiver with the standard fwknop client, for a device provisioned in fwknop format:
 * the `fwknop` command line and the equivalent `~/.fwknoprc` stanza (then `fwknop -n <stanza>`).
 *
 * Contract: pure text; keys appear only here, in what the operator asked to be shown (`devices add`), never in
 * logs. `ALLOW_IP source` / `-s` makes the client send 0.0.0.0, which the receiver reads as "the packet's
 * observed source"; a fixed `-a <ip>` must equal the address the packet comes from.
 */
import type { AccessEntry, FwknopHashType } from '../../spa/types.ts';

export interface FwknopHintInput {
  readonly stanza: string;
  readonly username: string;
  readonly server: string;
  readonly spaPort: number;
  readonly access: readonly AccessEntry[];
  readonly keyBase64: string;
  readonly hmacKeyBase64: string;
  readonly hmacType: FwknopHashType;
}

function accessList(access: readonly AccessEntry[]): string {
  return access.map((entry) => `${entry.protocol}/${entry.port}`).join(',');
}

/** The fwknop names of the HMAC types (fwknop --hmac-digest-type). */
const FWKNOP_HMAC_NAMES: Readonly<Record<FwknopHashType, string>> = Object.freeze({
  md5: 'md5',
  sha1: 'sha1',
  sha256: 'sha256',
  sha384: 'sha384',
  sha512: 'sha512',
  'sha3-256': 'sha3_256',
  'sha3-512': 'sha3_512',
});

export function fwknopCommandLine(input: FwknopHintInput): string {
  return [
    'fwknop',
    `-A ${accessList(input.access)}`,
    '-s',
    `-D ${input.server}`,
    `-p ${input.spaPort}`,
    `-U ${input.username}`,
    '--use-hmac',
    `--hmac-digest-type ${FWKNOP_HMAC_NAMES[input.hmacType]}`,
    `--key-base64-rijndael ${input.keyBase64}`,
    `--key-base64-hmac ${input.hmacKeyBase64}`,
  ].join(' ');
}

export function fwknoprcStanza(input: FwknopHintInput): string {
  const rows: [string, string][] = [
    ['SPA_SERVER', input.server],
    ['SPA_SERVER_PORT', String(input.spaPort)],
    ['SPA_SERVER_PROTO', 'udp'],
    ['ACCESS', accessList(input.access)],
    ['ALLOW_IP', 'source'],
    ['SPOOF_USER', input.username],
    ['USE_HMAC', 'Y'],
    ['HMAC_DIGEST_TYPE', FWKNOP_HMAC_NAMES[input.hmacType]],
    ['KEY_BASE64', input.keyBase64],
    ['HMAC_KEY_BASE64', input.hmacKeyBase64],
  ];
  return [`[${input.stanza}]`, ...rows.map(([name, value]) => `${name.padEnd(20)}${value}`)].join('\n');
}
