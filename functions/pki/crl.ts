/**
 * Certificate revocation lists signed by a CA (for Mosquitto's `crlfile`: the broker then refuses the listed
 * device certificates). Pure apart from WebCrypto signing; file handling is the caller's.
 *
 * Contract: `createCrl(ca, entries, { thisUpdate, nextUpdate })` returns a PEM X.509 v2 CRL issued by the CA's
 * subject, signed with the CA key (ECDSA P-256, SHA-256), listing every entry (hex serial, revocation date).
 * A CA key that is not PKCS#8 P-256 is a PkiInputError. `nextUpdate` must be after `thisUpdate`: OpenSSL rejects
 * every certificate once a CRL's nextUpdate has passed, so callers choose it generously and reissue.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { importSigningKey, type Pem } from './certificate-authority.ts';
import { PkiInputError } from './pki-error.ts';

export interface CrlEntry {
  /** Hexadecimal serial number of the revoked certificate. */
  readonly serial: string;
  /** Epoch milliseconds. */
  readonly revokedAt: number;
}

export async function createCrl(
  ca: Pem,
  entries: readonly CrlEntry[],
  times: { readonly thisUpdate: number; readonly nextUpdate: number },
): Promise<string> {
  if (!(times.nextUpdate > times.thisUpdate)) {
    throw new PkiInputError('nextUpdate', 'nextUpdate must be after thisUpdate');
  }
  let issuer: string;
  try {
    issuer = new x509.X509Certificate(ca.cert).subject;
  } catch (cause) {
    throw new PkiInputError('ca.cert', 'the CA certificate is not PEM', { cause });
  }
  const crl = await x509.X509CrlGenerator.create({
    issuer,
    thisUpdate: new Date(times.thisUpdate),
    nextUpdate: new Date(times.nextUpdate),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    signingKey: await importSigningKey(ca.key, 'ca.key'),
    entries: entries.map((entry) => ({
      serialNumber: entry.serial.toLowerCase(),
      revocationDate: new Date(entry.revokedAt),
      reason: x509.X509CrlReason.cessationOfOperation,
    })),
  });
  // OpenSSL (and so Mosquitto's crlfile) reads the 'X509 CRL' PEM label only.
  return x509.PemConverter.encode(crl.rawData, 'X509 CRL');
}
