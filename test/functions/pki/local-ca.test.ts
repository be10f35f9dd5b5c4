/**
 * The local PKI: certificates checked with node's X509Certificate and with `openssl verify`; files on disk with
 * their permissions; reuse across runs; refusal of bad input and of readable key files.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createCa,
  ensureLocalPki,
  issueCertificate,
  type Pem,
  PkiInputError,
  PkiPermissionError,
} from '../../../functions/pki/local-ca.ts';

const run = promisify(execFile);
let dir: string;
let ca: Pem;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bc-pki-'));
  ca = await createCa('test CA');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function openssl(args: string[]): Promise<string> {
  try {
    const { stdout } = await run('openssl', args);
    return stdout;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new Error('openssl is required for this test');
    throw error;
  }
}

describe('createCa', () => {
  it('makes a self-signed P-256 CA allowed to sign certificates', () => {
    const cert = new X509Certificate(ca.cert);
    expect(cert.ca).toBe(true);
    expect(cert.subject).toBe('CN=test CA');
    expect(cert.checkIssued(cert)).toBe(true);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyType).toBe('ec');
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('sets keyCertSign in a critical key usage and CA:TRUE pathlen:0', async () => {
    const text = await openssl(['x509', '-noout', '-text', '-in', await writeTemp('ca.pem', ca.cert)]);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
  });
});

describe('issueCertificate', () => {
  it('issues a server certificate with its SANs and serverAuth, verified by node and openssl', async () => {
    const server = await issueCertificate(ca, {
      commonName: 'broker',
      kind: 'server',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
    });
    const cert = new X509Certificate(server.cert);
    const caCert = new X509Certificate(ca.cert);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.subject).toBe('CN=broker');
    expect(cert.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    const caFile = await writeTemp('ca-for-server.pem', ca.cert);
    const certFile = await writeTemp('server.pem', server.cert);
    expect(await openssl(['verify', '-CAfile', caFile, '-purpose', 'sslserver', certFile])).toContain(': OK');
    const text = await openssl(['x509', '-noout', '-text', '-in', certFile]);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature/);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
  });

  it('issues a client certificate (clientAuth) that openssl refuses for the server purpose', async () => {
    const client = await issueCertificate(ca, { commonName: 'device-1', kind: 'client' });
    const cert = new X509Certificate(client.cert);
    expect(cert.subject).toBe('CN=device-1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(cert.subjectAltName).toBeUndefined();
    const caFile = await writeTemp('ca-for-client.pem', ca.cert);
    const certFile = await writeTemp('client.pem', client.cert);
    expect(await openssl(['verify', '-CAfile', caFile, '-purpose', 'sslclient', certFile])).toContain(': OK');
    await expect(openssl(['verify', '-CAfile', caFile, '-purpose', 'sslserver', certFile])).rejects.toThrow();
  });

  it('is not verified by another CA', async () => {
    const other = await createCa('other CA');
    const client = await issueCertificate(ca, { commonName: 'device-1', kind: 'client' });
    const cert = new X509Certificate(client.cert);
    const otherCert = new X509Certificate(other.cert);
    expect(cert.checkIssued(otherCert)).toBe(false);
    expect(cert.verify(otherCert.publicKey)).toBe(false);
    const otherFile = await writeTemp('other-ca.pem', other.cert);
    const certFile = await writeTemp('client-2.pem', client.cert);
    await expect(openssl(['verify', '-CAfile', otherFile, certFile])).rejects.toThrow();
  });

  it('returns a PKCS#8 key matching the certificate', async () => {
    const client = await issueCertificate(ca, { commonName: 'device-2', kind: 'client' });
    expect(client.key).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(new X509Certificate(client.cert).checkPrivateKey(await importKey(client.key))).toBe(true);
  });

  it.each([
    ['empty common name', { commonName: '', kind: 'client' }, 'commonName'],
    ['control character in the common name', { commonName: 'a\nb', kind: 'client' }, 'commonName'],
    ['common name over 64 characters', { commonName: 'x'.repeat(65), kind: 'client' }, 'commonName'],
    ['unknown kind', { commonName: 'x', kind: 'peer' }, 'kind'],
    ['server without SAN', { commonName: 'x', kind: 'server' }, 'dnsNames'],
    ['DNS name with a space', { commonName: 'x', kind: 'server', dnsNames: ['a b'] }, 'dnsNames'],
    [
      'IP address with a zone',
      { commonName: 'x', kind: 'server', ipAddresses: ['fe80::1%eth0'] },
      'ipAddresses',
    ],
    [
      'IP address that is not one',
      { commonName: 'x', kind: 'server', ipAddresses: ['1.2.3'] },
      'ipAddresses',
    ],
    ['zero days', { commonName: 'x', kind: 'client', days: 0 }, 'days'],
    ['fractional days', { commonName: 'x', kind: 'client', days: 1.5 }, 'days'],
  ])('refuses %s', async (_label, opts, field) => {
    const error = await issueCertificate(ca, opts as never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PkiInputError);
    expect((error as PkiInputError).field).toBe(field);
  });

  it('refuses a CA key that does not belong to the CA certificate', async () => {
    const other = await createCa('other CA');
    const error = await issueCertificate(
      { cert: ca.cert, key: other.key },
      { commonName: 'x', kind: 'client' },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PkiInputError);
    expect((error as PkiInputError).field).toBe('ca.key');
  });

  it('refuses to sign with a leaf certificate', async () => {
    const leaf = await issueCertificate(ca, { commonName: 'leaf', kind: 'client' });
    const error = await issueCertificate(leaf, { commonName: 'x', kind: 'client' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PkiInputError);
    expect((error as PkiInputError).field).toBe('ca.cert');
  });
});

describe('ensureLocalPki', () => {
  it('creates a 0700 directory, 0600 keys and a broker certificate for localhost, 127.0.0.1 and ::1', async () => {
    const pkiDir = join(dir, 'first-run');
    const paths = await ensureLocalPki(pkiDir);
    expect(paths).toEqual({
      caCert: join(pkiDir, 'ca.crt'),
      caKey: join(pkiDir, 'ca.key'),
      brokerCert: join(pkiDir, 'broker.crt'),
      brokerKey: join(pkiDir, 'broker.key'),
      broker: 'created',
    });
    expect((await stat(pkiDir)).mode & 0o777).toBe(0o700);
    expect((await stat(paths.caKey)).mode & 0o777).toBe(0o600);
    expect((await stat(paths.brokerKey)).mode & 0o777).toBe(0o600);
    const broker = new X509Certificate(await readFile(paths.brokerCert));
    const caCert = new X509Certificate(await readFile(paths.caCert));
    expect(broker.checkIssued(caCert)).toBe(true);
    expect(broker.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(broker.checkPrivateKey(await importKey(await readFile(paths.brokerKey, 'utf8')))).toBe(true);
    expect(
      await openssl(['verify', '-CAfile', paths.caCert, '-purpose', 'sslserver', paths.brokerCert]),
    ).toContain(': OK');
  });

  it('reuses the CA and broker certificate on the next run', async () => {
    const pkiDir = join(dir, 'reuse');
    const first = await ensureLocalPki(pkiDir);
    const before = await Promise.all([readFile(first.caCert, 'utf8'), readFile(first.brokerCert, 'utf8')]);
    const second = await ensureLocalPki(pkiDir);
    const after = await Promise.all([readFile(second.caCert, 'utf8'), readFile(second.brokerCert, 'utf8')]);
    expect(after).toEqual(before);
    expect(second.broker).toBe('kept');
  });

  it('reissues the broker certificate, from the same CA, when a new SAN is asked for', async () => {
    const pkiDir = join(dir, 'extra-san');
    const first = await ensureLocalPki(pkiDir);
    const caBefore = await readFile(first.caCert, 'utf8');
    const paths = await ensureLocalPki(pkiDir, {
      extraIpAddresses: ['10.1.2.3'],
      extraDnsNames: ['broker.lan'],
    });
    expect(await readFile(paths.caCert, 'utf8')).toBe(caBefore);
    const broker = new X509Certificate(await readFile(paths.brokerCert));
    expect(broker.checkIssued(new X509Certificate(caBefore))).toBe(true);
    expect(broker.checkIP('10.1.2.3')).toBe('10.1.2.3');
    expect(broker.checkHost('broker.lan')).toBe('broker.lan');
    expect(paths.broker).toBe('reissued');
  });

  it('reissues it, from the same CA, when a name is dropped; keeps it while the set is the same', async () => {
    const pkiDir = join(dir, 'names-change');
    const wide = { extraIpAddresses: ['10.1.2.3', '10.1.2.4'], extraDnsNames: ['broker.lan'] };
    const first = await ensureLocalPki(pkiDir, wide);
    const caBefore = await readFile(first.caCert, 'utf8');
    // The same set in another order and case, with a loopback default repeated: nothing to do.
    const same = await ensureLocalPki(pkiDir, {
      extraIpAddresses: ['10.1.2.4', '127.0.0.1', '10.1.2.3'],
      extraDnsNames: ['BROKER.lan'],
    });
    expect(same.broker).toBe('kept');
    const narrow = await ensureLocalPki(pkiDir, { extraIpAddresses: ['10.1.2.3'] });
    expect(narrow.broker).toBe('reissued');
    expect(await readFile(narrow.caCert, 'utf8')).toBe(caBefore);
    const broker = new X509Certificate(await readFile(narrow.brokerCert));
    expect(broker.checkIssued(new X509Certificate(caBefore))).toBe(true);
    expect(broker.subjectAltName).toBe(
      'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:10.1.2.3',
    );
  });

  it('keepBrokerNames (a caller that needs only the CA) leaves the names of a usable certificate alone', async () => {
    const pkiDir = join(dir, 'keep-names');
    const first = await ensureLocalPki(pkiDir, { extraDnsNames: ['broker.lan'] });
    const before = await readFile(first.brokerCert, 'utf8');
    const kept = await ensureLocalPki(pkiDir, { keepBrokerNames: true });
    expect(kept.broker).toBe('kept');
    expect(await readFile(kept.brokerCert, 'utf8')).toBe(before);
    await rm(kept.brokerCert);
    await rm(kept.brokerKey);
    expect((await ensureLocalPki(pkiDir, { keepBrokerNames: true })).broker).toBe('created');
  });

  it('refuses a key file readable by others, naming the file and the fix', async () => {
    const pkiDir = join(dir, 'loose');
    const paths = await ensureLocalPki(pkiDir);
    await chmod(paths.caKey, 0o644);
    const error = await ensureLocalPki(pkiDir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PkiPermissionError);
    expect((error as Error).message).toContain(`chmod 600 ${paths.caKey}`);
  });

  it('refuses a directory readable by others', async () => {
    const pkiDir = join(dir, 'open-dir');
    await ensureLocalPki(pkiDir);
    await chmod(pkiDir, 0o755);
    await expect(ensureLocalPki(pkiDir)).rejects.toBeInstanceOf(PkiPermissionError);
  });

  it('refuses to replace a CA whose key is missing', async () => {
    const pkiDir = join(dir, 'half-ca');
    const paths = await ensureLocalPki(pkiDir);
    await rm(paths.caKey);
    const error = await ensureLocalPki(pkiDir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PkiInputError);
    expect((error as PkiInputError).field).toBe(paths.caKey);
  });
});

async function writeTemp(name: string, content: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}

async function importKey(pem: string) {
  const { createPrivateKey } = await import('node:crypto');
  return createPrivateKey(pem);
}
