/**
 * The operator CA's revocations, kept next to the CA (`<ca>/revoked.json`, 0600) with the CRL built from them
 * (`<ca>/crl.pem`), for `blackcloud devices remove --aws`: the operator publishes crl.pem as the `crl` field of the
 * broker TLS secret, and Mosquitto refuses the removed devices' certificates.
 *
 * Contract: `revokeSerial` adds the serial once (idempotent), rewrites both files atomically and returns how many
 * certificates the CRL lists. The CRL is valid for ten years from now (`CRL_VALIDITY_MS`): OpenSSL refuses every
 * certificate once a CRL's nextUpdate has passed, and each revocation reissues it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../functions/adapters/local/device-file.ts';
import type { Pem } from '../../functions/pki/certificate-authority.ts';
import { type CrlEntry, createCrl } from '../../functions/pki/crl.ts';

export const CRL_VALIDITY_MS = 10 * 365 * 86_400_000;

interface Revocation extends CrlEntry {
  readonly deviceId: string;
}

export async function revokeSerial(
  caDir: string,
  ca: Pem,
  revocation: Revocation,
  now: number,
): Promise<{ crlFile: string; count: number }> {
  const listFile = join(caDir, 'revoked.json');
  let list: Revocation[] = [];
  try {
    list = JSON.parse(await readFile(listFile, 'utf8')) as Revocation[];
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const serial = revocation.serial.toLowerCase();
  if (!list.some((entry) => entry.serial.toLowerCase() === serial)) list.push({ ...revocation, serial });
  const crlFile = join(caDir, 'crl.pem');
  const pem = await createCrl(ca, list, { thisUpdate: now, nextUpdate: now + CRL_VALIDITY_MS });
  await writeFileAtomic(listFile, `${JSON.stringify(list, null, 2)}\n`);
  await writeFileAtomic(crlFile, pem);
  return { crlFile, count: list.length };
}
