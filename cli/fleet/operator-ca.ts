/**
 * The operator's CA on their machine (`--ca DIR`: ca.crt and ca.key, as `infra/tls/blackcloud-tls.sh ca DIR` makes
 * them; the key never leaves the machine) for the AWS fleet: loading it to sign device certificates, and its
 * revocations.
 *
 * `loadOperatorCa` accepts a SEC1 or PKCS#8 EC key, refuses a key file readable by group or others, and returns the
 * pair as PKCS#8 PEM; every problem is a FleetError naming the file and the fix.
 *
 * Revocations are kept next to the CA (`<ca>/revoked.json`, 0600) with the CRL built from them
 * (`<ca>/crl.pem`), for `blackcloud devices remove --aws`: the operator publishes crl.pem as the `crl` field of the
 * broker TLS secret, and Mosquitto refuses the removed devices' certificates.
 *
 * Contract: `revokeSerial` adds the serial once (idempotent), rewrites both files atomically and returns how many
 * certificates the CRL lists. The CRL is valid for ten years from now (`CRL_VALIDITY_MS`): OpenSSL refuses every
 * certificate once a CRL's nextUpdate has passed, and each revocation reissues it.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../functions/local/device-file.ts';
import type { Pem } from '../../functions/pki/certificate-authority.ts';
import { type CrlEntry, createCrl } from '../../functions/pki/crl.ts';
import { FleetError } from './fleet.ts';

/** Loads the operator's CA (SEC1 or PKCS#8 EC key) as PKCS#8 PEM for issueCertificate. */
export async function loadOperatorCa(caDir: string): Promise<Pem> {
  const certFile = join(caDir, 'ca.crt');
  const keyFile = join(caDir, 'ca.key');
  let cert: string;
  let keyText: string;
  try {
    [cert, keyText] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
  } catch (error) {
    throw new FleetError(
      `--ca ${caDir}: ${certFile} and ${keyFile} are needed to sign device certificates ` +
        `(${(error as NodeJS.ErrnoException).code ?? String(error)}); fix: pass --ca DIR of your CA, or create ` +
        'one with "infra/tls/blackcloud-tls.sh ca DIR" (docs/deploy.md, step 2)',
      { cause: error },
    );
  }
  const mode = (await stat(keyFile)).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new FleetError(
      `--ca ${caDir}: ${keyFile} has mode ${mode.toString(8).padStart(4, '0')}; fix: chmod 600 ${keyFile}`,
    );
  }
  try {
    new X509Certificate(cert);
    const key = createPrivateKey(keyText).export({ type: 'pkcs8', format: 'pem' }).toString();
    return { cert, key };
  } catch (error) {
    throw new FleetError(
      `--ca ${caDir}: ca.crt / ca.key are not a PEM certificate and private key; fix: pass the CA directory ` +
        'made by "infra/tls/blackcloud-tls.sh ca DIR"',
      { cause: error },
    );
  }
}

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
