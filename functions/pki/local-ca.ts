/**
 * The local PKI on disk, for `blackcloud up`: one CA and the embedded broker's server certificate.
 *
 * Contract of `ensureLocalPki(dir)`:
 * - First run: creates `dir` (0700), a CA (`ca.crt`, `ca.key`) and a broker certificate (`broker.crt`,
 *   `broker.key`, CN `blackcloud-broker`, SAN localhost, 127.0.0.1, ::1 plus any extra names asked for).
 *   Private keys are written 0600, atomically (temporary file + rename).
 * - Later runs reuse them. The broker certificate is reissued (same CA) when it is not signed by the CA, expires
 *   within a day, or its set of SANs differs from the one asked for (a name added or dropped, e.g. a new
 *   `up --public-address`); with `keepBrokerNames` (callers that only need the CA) its SANs are left as they
 *   are. `broker` tells whether this call kept, created or reissued it. The CA is never replaced silently: a CA certificate without its key
 *   (or the reverse) is an error, since replacing it would invalidate every device certificate.
 * - A directory readable by others, or a key file with group/other permission bits, is refused
 *   (`PkiPermissionError`), as ssh refuses such keys; nothing is chmod-ed behind the user's back.
 * Returns the four paths and `broker`.
 */
// @peculiar/x509 (through tsyringe) needs the Reflect metadata polyfill loaded before it.
import 'reflect-metadata';
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { canonicalAddress } from '../core/ip-address.ts';
import { replaceFile } from '../local/replace-file.ts';
import { createCa, issueCertificate, type Pem } from './certificate-authority.ts';
import { PkiInputError, PkiPermissionError } from './pki-error.ts';

export {
  type CertificateKind,
  createCa,
  type IssueOptions,
  issueCertificate,
  type Pem,
} from './certificate-authority.ts';
export { PkiInputError, PkiPermissionError } from './pki-error.ts';

export const LOCAL_CA_COMMON_NAME = 'blackcloud local CA';
/** CN of the embedded broker's server certificate. */
export const BROKER_COMMON_NAME = 'blackcloud-broker';
export const BROKER_DNS_NAMES: readonly string[] = ['localhost'];
export const BROKER_IP_ADDRESSES: readonly string[] = ['127.0.0.1', '::1'];

export interface LocalPkiPaths {
  caCert: string;
  caKey: string;
  brokerCert: string;
  brokerKey: string;
  /** What this call did to the broker certificate: kept it, created it (none before) or reissued it. */
  broker?: 'kept' | 'created' | 'reissued';
}

export interface LocalPkiOptions {
  /** SANs added to the broker certificate besides localhost (e.g. a LAN host name). */
  extraDnsNames?: string[];
  /** SANs added besides 127.0.0.1 and ::1 (e.g. the address devices dial). */
  extraIpAddresses?: string[];
  /** Keep the broker certificate's SANs whatever they are (it is still reissued when unusable). */
  keepBrokerNames?: boolean;
}

const KEY_FILE_MODE = 0o600;
const CERT_FILE_MODE = 0o644;
const DIR_MODE = 0o700;
const RENEW_BEFORE_MS = 24 * 60 * 60 * 1000;

export async function ensureLocalPki(dir: string, opts: LocalPkiOptions = {}): Promise<LocalPkiPaths> {
  const paths: LocalPkiPaths = {
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    brokerCert: join(dir, 'broker.crt'),
    brokerKey: join(dir, 'broker.key'),
  };
  await ensurePrivateDirectory(dir);

  let ca = await readPair(paths.caCert, paths.caKey);
  let caCreated = false;
  if (ca === undefined) {
    ca = await createCa(LOCAL_CA_COMMON_NAME);
    await writePemFiles(paths.caCert, paths.caKey, ca);
    caCreated = true;
  }

  const dnsNames = unique([...BROKER_DNS_NAMES, ...(opts.extraDnsNames ?? [])]);
  const ipAddresses = unique([...BROKER_IP_ADDRESSES, ...(opts.extraIpAddresses ?? [])]);
  const broker = caCreated
    ? undefined
    : await readPair(paths.brokerCert, paths.brokerKey, { optional: true });
  const usable =
    broker !== undefined &&
    brokerCertificateUsable(broker, ca) &&
    (opts.keepBrokerNames === true || sameNames(broker, dnsNames, ipAddresses));
  if (!usable) {
    const issued = await issueCertificate(ca, {
      commonName: BROKER_COMMON_NAME,
      kind: 'server',
      dnsNames,
      ipAddresses,
    });
    await writePemFiles(paths.brokerCert, paths.brokerKey, issued);
  }
  return { ...paths, broker: usable ? 'kept' : broker === undefined ? 'created' : 'reissued' };
}

/** Reads a certificate and its key (checking the key file's permissions). */
export async function loadPem(certPath: string, keyPath: string): Promise<Pem> {
  const pair = await readPair(certPath, keyPath);
  if (pair === undefined) {
    throw new PkiInputError(
      certPath,
      `${certPath} and ${keyPath} do not exist: create them with ensureLocalPki`,
    );
  }
  return pair;
}

/**
 * Writes a certificate (0644) and its private key (0600), each atomically. Used for the broker and for device
 * certificates provisioned by `blackcloud up`.
 */
export async function writePemFiles(certPath: string, keyPath: string, pem: Pem): Promise<void> {
  await replaceFile(keyPath, pem.key, KEY_FILE_MODE);
  await replaceFile(certPath, pem.cert, CERT_FILE_MODE);
}

async function ensurePrivateDirectory(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
  const info = await stat(dir);
  if (!info.isDirectory()) {
    throw new PkiInputError(dir, `${dir} is not a directory: pass a directory path for the PKI`);
  }
  if ((info.mode & 0o077) !== 0) throw new PkiPermissionError(dir, info.mode, DIR_MODE);
}

async function readPair(
  certPath: string,
  keyPath: string,
  opts: { optional?: boolean } = {},
): Promise<Pem | undefined> {
  const [cert, key] = await Promise.all([readIfExists(certPath), readIfExists(keyPath, { secret: true })]);
  if (cert === undefined && key === undefined) return undefined;
  if (cert === undefined || key === undefined) {
    if (opts.optional) return undefined;
    const missing = cert === undefined ? certPath : keyPath;
    throw new PkiInputError(
      missing,
      `${missing} is missing while its pair exists: restore it, or delete both files to create a new pair ` +
        '(a new CA invalidates every certificate it signed)',
    );
  }
  return { cert, key };
}

async function readIfExists(path: string, opts: { secret?: boolean } = {}): Promise<string | undefined> {
  try {
    if (opts.secret) {
      const info = await stat(path);
      if ((info.mode & 0o077) !== 0) throw new PkiPermissionError(path, info.mode, KEY_FILE_MODE);
    }
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

function brokerCertificateUsable(broker: Pem, ca: Pem): boolean {
  let cert: X509Certificate;
  let caCert: X509Certificate;
  try {
    cert = new X509Certificate(broker.cert);
    caCert = new X509Certificate(ca.cert);
  } catch {
    return false;
  }
  if (!cert.checkIssued(caCert) || !cert.verify(caCert.publicKey)) return false;
  return Date.parse(cert.validTo) - Date.now() >= RENEW_BEFORE_MS;
}

/** Whether the certificate names exactly these DNS names and IP addresses (order and case aside). */
function sameNames(broker: Pem, dnsNames: string[], ipAddresses: string[]): boolean {
  const present = subjectAltNames(broker.cert);
  const wantDns = new Set(dnsNames.map((name) => name.toLowerCase()));
  const wantIp = new Set(ipAddresses.map(canonicalIp));
  const same = (a: Set<string>, b: Set<string>) => a.size === b.size && [...a].every((item) => b.has(item));
  return same(present.dns, wantDns) && same(present.ip, wantIp);
}

function subjectAltNames(pem: string): { dns: Set<string>; ip: Set<string> } {
  const dns = new Set<string>();
  const ip = new Set<string>();
  const san = new x509.X509Certificate(pem).getExtension(x509.SubjectAlternativeNameExtension);
  for (const name of san?.names.items ?? []) {
    if (name.type === 'dns') dns.add(name.value.toLowerCase());
    if (name.type === 'ip') ip.add(canonicalIp(name.value));
  }
  return { dns, ip };
}

function canonicalIp(address: string): string {
  return canonicalAddress(address) ?? address;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
