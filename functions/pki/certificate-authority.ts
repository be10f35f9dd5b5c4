/**
 * The local certificate authority behind the embedded broker's mutual TLS.
 *
 * Contract:
 * - `createCa` makes a self-signed ECDSA P-256 / SHA-256 root: basicConstraints CA:true pathlen:0 (critical),
 *   keyUsage keyCertSign + cRLSign (critical), subject key identifier.
 * - `issueCertificate` signs an ECDSA P-256 leaf: basicConstraints CA:false (critical), keyUsage
 *   digitalSignature (critical), extendedKeyUsage serverAuth ('server') or clientAuth ('client'), SANs, subject and
 *   authority key identifiers. The subject is exactly one CN: the broker takes the client certificate's CN as the
 *   MQTT identity. Inputs are validated before anything is signed (typed `PkiInputError`).
 * - Keys are PKCS#8 PEM ("PRIVATE KEY"), certificates PEM. Serial numbers are 128 random bits (positive).
 * - notBefore is backdated five minutes to tolerate clock skew between hosts.
 *
 * File handling (the 0700 directory, 0600 key files) lives in local-ca.ts, which re-exports this module.
 */
// @peculiar/x509 (through tsyringe) needs the Reflect metadata polyfill loaded before it.
import 'reflect-metadata';
import { createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import { PkiInputError } from './pki-error.ts';

// @peculiar/x509 types its provider with the DOM `Crypto`, which node's webcrypto implements (no DOM lib here).
x509.cryptoProvider.set(webcrypto as never);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** A certificate and its private key, both PEM. */
export interface Pem {
  cert: string;
  key: string;
}

export type CertificateKind = 'server' | 'client';

export interface IssueOptions {
  commonName: string;
  kind: CertificateKind;
  dnsNames?: string[];
  ipAddresses?: string[];
  /** Lifetime in days. @default 825 */
  days?: number;
}

const KEY_ALGORITHM: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING_ALGORITHM: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const DEFAULT_CA_DAYS = 3650;
const DEFAULT_LEAF_DAYS = 825;
const MAX_DAYS = 36_500;
const BACKDATE_MS = 5 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;
/** X.520 ub-common-name. */
const MAX_COMMON_NAME_LENGTH = 64;
const SERIAL_BYTES = 16;

/** Creates a self-signed root CA. */
export async function createCa(commonName: string, opts: { days?: number } = {}): Promise<Pem> {
  validateCommonName(commonName);
  const days = validateDays(opts.days ?? DEFAULT_CA_DAYS);
  const keys = (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [commonName] }],
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + days * DAY_MS),
    signingAlgorithm: SIGNING_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString('pem'), key: await exportKey(keys.privateKey) };
}

/** Issues a server or client certificate signed by `ca`. */
export async function issueCertificate(ca: Pem, opts: IssueOptions): Promise<Pem> {
  validateCommonName(opts.commonName);
  if (opts.kind !== 'server' && opts.kind !== 'client') {
    throw new PkiInputError(
      'kind',
      `kind must be 'server' or 'client', received ${JSON.stringify(opts.kind)}`,
    );
  }
  const dnsNames = (opts.dnsNames ?? []).map(validateDnsName);
  const ipAddresses = (opts.ipAddresses ?? []).map(validateIpAddress);
  if (opts.kind === 'server' && dnsNames.length + ipAddresses.length === 0) {
    throw new PkiInputError(
      'dnsNames',
      `a server certificate for ${JSON.stringify(opts.commonName)} needs at least one DNS name or IP address ` +
        '(clients verify the host name against the SANs): pass dnsNames and/or ipAddresses',
    );
  }
  const days = validateDays(opts.days ?? DEFAULT_LEAF_DAYS);
  const caCert = parseCertificate(ca.cert, 'ca.cert');
  const basic = caCert.getExtension(x509.BasicConstraintsExtension);
  if (!basic?.ca) {
    throw new PkiInputError(
      'ca.cert',
      `${caCert.subject} is not a CA certificate (basicConstraints CA:false)`,
    );
  }
  const caKey = await importSigningKey(ca.key, 'ca.key');
  if (!samePublicKey(ca.key, caCert)) {
    throw new PkiInputError(
      'ca.key',
      `ca.key is not the private key of the CA certificate ${caCert.subject}`,
    );
  }

  const keys = (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const names: x509.JsonGeneralName[] = [
    ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
    ...ipAddresses.map((value) => ({ type: 'ip' as const, value })),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(
      [opts.kind === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth],
      false,
    ),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false));

  const now = Date.now();
  const notAfter = Math.min(now + days * DAY_MS, caCert.notAfter.getTime());
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [opts.commonName] }],
    issuer: caCert.subjectName,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(notAfter),
    signingAlgorithm: SIGNING_ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions,
  });
  return { cert: cert.toString('pem'), key: await exportKey(keys.privateKey) };
}

function validateCommonName(commonName: unknown): void {
  if (
    typeof commonName !== 'string' ||
    commonName.length === 0 ||
    commonName.length > MAX_COMMON_NAME_LENGTH ||
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
    /[\u0000-\u001f\u007f]/.test(commonName)
  ) {
    throw new PkiInputError(
      'commonName',
      `commonName must be 1..${MAX_COMMON_NAME_LENGTH} printable characters, received ${JSON.stringify(commonName)}`,
    );
  }
}

const DNS_LABEL = '(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)';
const DNS_NAME = new RegExp(`^(?:\\*\\.)?(?:${DNS_LABEL}\\.)*${DNS_LABEL}$`);

function validateDnsName(name: unknown): string {
  if (typeof name !== 'string' || name.length > 253 || !DNS_NAME.test(name)) {
    throw new PkiInputError(
      'dnsNames',
      `dnsNames entries must be host names such as "localhost" or "broker.example.com", received ${JSON.stringify(name)}`,
    );
  }
  return name;
}

function validateIpAddress(address: unknown): string {
  // node's isIP accepts IPv6 zone ids (fe80::1%eth0), which have no place in a certificate
  if (typeof address !== 'string' || address.includes('%') || isIP(address) === 0) {
    throw new PkiInputError(
      'ipAddresses',
      `ipAddresses entries must be IPv4 or IPv6 addresses without zone, received ${JSON.stringify(address)}`,
    );
  }
  return address;
}

function validateDays(days: unknown): number {
  if (typeof days !== 'number' || !Number.isInteger(days) || days < 1 || days > MAX_DAYS) {
    throw new PkiInputError('days', `days must be an integer 1..${MAX_DAYS}, received ${String(days)}`);
  }
  return days;
}

function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(SERIAL_BYTES));
  // Positive INTEGER (high bit clear) and never zero or with a leading zero byte (DER minimality).
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return Buffer.from(bytes).toString('hex');
}

async function exportKey(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

function parseCertificate(pem: string, field: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(pem);
  } catch (cause) {
    throw new PkiInputError(field, `${field} is not a PEM certificate`, { cause });
  }
}

export async function importSigningKey(pem: string, field: string): Promise<CryptoKey> {
  try {
    const der = x509.PemConverter.decodeFirst(pem);
    return await webcrypto.subtle.importKey('pkcs8', der, KEY_ALGORITHM, false, ['sign']);
  } catch (cause) {
    throw new PkiInputError(field, `${field} is not a PKCS#8 PEM ECDSA P-256 private key`, { cause });
  }
}

function samePublicKey(privateKeyPem: string, cert: x509.X509Certificate): boolean {
  const derived = createPublicKey(createPrivateKey(privateKeyPem)).export({ type: 'spki', format: 'der' });
  return derived.equals(Buffer.from(cert.publicKey.rawData));
}
