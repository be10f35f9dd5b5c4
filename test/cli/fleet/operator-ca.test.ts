/**
 * The operator's CA for the AWS fleet: loaded as infra/tls/blackcloud-tls.sh writes it (SEC1 key), refused with
 * a clear message when missing or readable by others; revocations produce a CRL OpenSSL accepts, idempotently.
 */
import { spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FleetError } from '../../../cli/fleet/fleet.ts';
import { loadOperatorCa, revokeSerial } from '../../../cli/fleet/operator-ca.ts';
import { createCa, issueCertificate } from '../../../functions/pki/certificate-authority.ts';
import { removeDir, requireTool, tempDir } from '../../functions/local/helpers.ts';

let dir: string;
let caDir: string;

beforeAll(async () => {
  dir = await tempDir('bc9-ca');
  caDir = join(dir, 'ca');
  await mkdir(caDir, { mode: 0o700 });
  // The shell script's form: `openssl ecparam -genkey -noout` writes a SEC1 ("EC PRIVATE KEY") key.
  const openssl = await requireTool('openssl', 'openssl');
  const key = spawnSync(openssl, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout'], {
    encoding: 'utf8',
  });
  await writeFile(join(caDir, 'ca.key'), key.stdout, { mode: 0o600 });
  const cert = spawnSync(
    openssl,
    [
      'req',
      '-x509',
      '-new',
      '-key',
      join(caDir, 'ca.key'),
      '-sha256',
      '-days',
      '30',
      '-subj',
      '/CN=bc9 script CA',
    ],
    { encoding: 'utf8' },
  );
  await writeFile(join(caDir, 'ca.crt'), cert.stdout, { mode: 0o644 });
});

afterAll(async () => {
  await removeDir(dir);
});

describe('loadOperatorCa', () => {
  it('loads the SEC1 key of blackcloud-tls.sh and signs device certificates with it', async () => {
    expect(await readFile(join(caDir, 'ca.key'), 'utf8')).toContain('BEGIN EC PRIVATE KEY');
    const ca = await loadOperatorCa(caDir);
    const device = await issueCertificate(ca, { commonName: 'dev-1', kind: 'client' });
    const verify = spawnSync('openssl', ['verify', '-CAfile', join(caDir, 'ca.crt')], {
      input: device.cert,
      encoding: 'utf8',
    });
    expect(verify.stdout.trim()).toBe('stdin: OK');
  });

  it('a missing CA or a key readable by others is a FleetError naming the file and the fix', async () => {
    await expect(loadOperatorCa(join(dir, 'nowhere'))).rejects.toThrow(FleetError);
    await expect(loadOperatorCa(join(dir, 'nowhere'))).rejects.toThrow(
      /--ca .*nowhere: .*ca\.crt and .*ca\.key are needed to sign device certificates \(ENOENT\); fix: pass --ca DIR of your CA, or create one with "infra\/tls\/blackcloud-tls\.sh ca DIR"/,
    );
    const loose = join(dir, 'loose');
    await mkdir(loose);
    const ca = await createCa('loose CA');
    await writeFile(join(loose, 'ca.crt'), ca.cert);
    await writeFile(join(loose, 'ca.key'), ca.key);
    await chmod(join(loose, 'ca.key'), 0o644);
    await expect(loadOperatorCa(loose)).rejects.toThrow(/ca\.key has mode 0644; fix: chmod 600 .*ca\.key/);
  });
});

describe('revokeSerial', () => {
  it('lists each revoked certificate once in a CRL signed by the CA', async () => {
    const ca = await loadOperatorCa(caDir);
    const a = new X509Certificate((await issueCertificate(ca, { commonName: 'a', kind: 'client' })).cert);
    const b = new X509Certificate((await issueCertificate(ca, { commonName: 'b', kind: 'client' })).cert);
    const now = Date.now();
    expect(
      (await revokeSerial(caDir, ca, { serial: a.serialNumber, deviceId: 'a', revokedAt: now }, now)).count,
    ).toBe(1);
    expect(
      (await revokeSerial(caDir, ca, { serial: a.serialNumber, deviceId: 'a', revokedAt: now }, now)).count,
    ).toBe(1);
    const { crlFile, count } = await revokeSerial(
      caDir,
      ca,
      { serial: b.serialNumber, deviceId: 'b', revokedAt: now },
      now,
    );
    expect(count).toBe(2);
    const crl = spawnSync(
      'openssl',
      ['crl', '-in', crlFile, '-CAfile', join(caDir, 'ca.crt'), '-noout', '-text'],
      {
        encoding: 'utf8',
      },
    );
    expect(crl.stderr).toContain('verify OK');
    expect(crl.stdout).toContain(`Serial Number: ${a.serialNumber}`);
    expect(crl.stdout).toContain(`Serial Number: ${b.serialNumber}`);
    expect(crl.stdout).toMatch(/Issuer: CN ?= ?bc9 script CA/);
    expect(createPrivateKey(ca.key).asymmetricKeyType).toBe('ec');
  });
});
