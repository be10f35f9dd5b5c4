/**
 * The device client's pure parts: the device file schema (a table of wrong inputs, each naming its field), topic
 * and server-address parsing, the knock builder (decoded by the protocol core it feeds), the `up` configuration
 * and the fwknop hints.
 */
import { describe, expect, it } from 'vitest';
import { buildKnock, randomDigits } from '../../device-client/knock.ts';
import { parseServerAddress } from '../../device-client/server-address.ts';
import { formatAccessSpec, parseAccessSpec } from '../../functions/core/access-spec.ts';
import { DeviceConfigError } from '../../functions/core/config-errors.ts';
import { type DeviceConfigFile, parseDeviceConfig } from '../../functions/core/device-config.ts';
import { resolveDeviceTopic } from '../../functions/core/topics.ts';
import { fwknopCommandLine, fwknoprcStanza } from '../../functions/local/fwknop-hints.ts';
import { LocalConfigError, resolveUpConfig } from '../../functions/local/up-config.ts';
import { decodeBc1 } from '../../spa/bc1.ts';
import { decodeFwknop } from '../../spa/fwknop.ts';

const KEY = Buffer.alloc(32, 7).toString('base64');
const FWKNOP_KEY = Buffer.alloc(32, 1).toString('base64');
const HMAC_KEY = Buffer.alloc(64, 2).toString('base64');

function deviceFile(): DeviceConfigFile {
  return {
    version: 1,
    deviceId: 'sensor-1',
    spa: { host: '192.0.2.10', port: 62201, native: { keyId: 42, key: KEY } },
    access: ['tcp/8883'],
    mqtt: { url: 'mqtts://192.0.2.10:8883', ca: 'ca.crt', cert: 'client.crt', key: 'client.key' },
  };
}

function fails(input: unknown): DeviceConfigError {
  try {
    parseDeviceConfig(input, '/etc/device.json');
  } catch (error) {
    if (error instanceof DeviceConfigError) return error;
    throw error;
  }
  throw new Error('expected a DeviceConfigError');
}

describe('device file', () => {
  it('parses a valid file into keys and absolute paths, frozen', () => {
    const config = parseDeviceConfig(deviceFile(), '/etc/blackcloud/device.json');
    expect(config).toMatchObject({
      deviceId: 'sensor-1',
      spa: { host: '192.0.2.10', port: 62201, format: 'native', durationSeconds: 0 },
      access: [{ protocol: 'tcp', port: 8883 }],
      mqtt: {
        caFile: '/etc/blackcloud/ca.crt',
        certFile: '/etc/blackcloud/client.crt',
        keyFile: '/etc/blackcloud/client.key',
      },
    });
    expect(config.spa.native?.key).toEqual(new Uint8Array(32).fill(7));
    expect(Object.isFrozen(config)).toBe(true);
  });

  const wrong: [string, (file: DeviceConfigFile) => unknown, string, RegExp][] = [
    ['not an object', () => 'text', '', /must be an object|is invalid/],
    ['wrong version', (f) => ({ ...f, version: 2 }), 'version', /must be 1/],
    ['device id with a slash', (f) => ({ ...f, deviceId: 'a/b' }), 'deviceId', /A-Z a-z 0-9/],
    ['port 0', (f) => ({ ...f, spa: { ...f.spa, port: 0 } }), 'spa.port', /1\.\.65535; received 0/],
    ['port as text', (f) => ({ ...f, spa: { ...f.spa, port: '62201' } }), 'spa.port', /received "62201"/],
    ['empty host', (f) => ({ ...f, spa: { ...f.spa, host: '' } }), 'spa.host', /receiver host/],
    [
      'key of 31 bytes',
      (f) => ({ ...f, spa: { ...f.spa, native: { keyId: 1, key: Buffer.alloc(31).toString('base64') } } }),
      'spa.native.key',
      /exactly 32 bytes.*\(hidden\)/,
    ],
    [
      'key not base64',
      (f) => ({ ...f, spa: { ...f.spa, native: { keyId: 1, key: '!!!' } } }),
      'spa.native.key',
      /\(hidden\)/,
    ],
    [
      'key id negative',
      (f) => ({ ...f, spa: { ...f.spa, native: { keyId: -1, key: KEY } } }),
      'spa.native.keyId',
      /0\.\.4294967295/,
    ],
    ['no keys at all', (f) => ({ ...f, spa: { host: 'h' } }), 'spa', /neither "native" nor "fwknop"/],
    [
      'format without its keys',
      (f) => ({ ...f, spa: { ...f.spa, format: 'fwknop' } }),
      'spa.format',
      /spa\.fwknop is missing/,
    ],
    [
      'bad hmac type',
      (f) => ({
        ...f,
        spa: {
          ...f.spa,
          fwknop: { username: 'u', encryptionKey: FWKNOP_KEY, hmacKey: HMAC_KEY, hmacType: 'crc32' },
        },
      }),
      'spa.fwknop.hmacType',
      /one of md5, sha1/,
    ],
    ['access entry', (f) => ({ ...f, access: ['tcp/99999'] }), 'access[0]', /"tcp\/8883"/],
    ['empty access', (f) => ({ ...f, access: [] }), 'access', /1\.\.8 entries/],
    [
      'plain mqtt',
      (f) => ({ ...f, mqtt: { ...f.mqtt, url: 'mqtt://h:1883' } }),
      'mqtt.url',
      /TLS is required/,
    ],
    [
      'missing cert',
      (f) => ({ ...f, mqtt: { ...f.mqtt, cert: undefined } }),
      'mqtt.cert',
      /client certificate/,
    ],
    ['unknown field', (f) => ({ ...f, spa: { ...f.spa, colour: 1 } }), 'spa.colour', /not a known field/],
  ];

  it.each(wrong)('rejects %s, naming the field', (_what, mutate, field, pattern) => {
    const error = fails(mutate(deviceFile()));
    expect(error.field).toBe(field);
    expect(error.message).toMatch(pattern);
    expect(error.message.startsWith('device file /etc/device.json: ')).toBe(true);
    expect(error.message).not.toContain(KEY);
    expect(error.message).not.toContain('\n');
  });
});

describe('access specs, topics, server addresses', () => {
  it.each([
    ['tcp/8883', { protocol: 'tcp', port: 8883 }],
    ['UDP/5683', { protocol: 'udp', port: 5683 }],
    ['tcp/0', undefined],
    ['tcp/65536', undefined],
    ['tcp/080', undefined],
    ['sctp/1', undefined],
    [' tcp/1', undefined],
  ])('parseAccessSpec(%j)', (text, expected) => {
    expect(parseAccessSpec(text)).toEqual(expected);
    if (expected !== undefined) expect(formatAccessSpec(parseAccessSpec(text)!)).toBe(text.toLowerCase());
  });

  it.each([
    ['telemetry', false, { ok: true, value: 'blackcloud/devices/d1/telemetry' }],
    ['blackcloud/devices/d1/a/b', false, { ok: true, value: 'blackcloud/devices/d1/a/b' }],
    ['/blackcloud/devices/d1/a', false, { ok: true, value: 'blackcloud/devices/d1/a' }],
    ['blackcloud/devices/d2/a', false, { ok: false, reason: 'outside-device-namespace' }],
    ['blackcloud/devices/d1', false, { ok: false, reason: 'outside-device-namespace' }],
    ['#', true, { ok: true, value: 'blackcloud/devices/d1/#' }],
    ['#', false, { ok: false, reason: 'bad-wildcard' }],
    ['a/#/b', true, { ok: false, reason: 'bad-wildcard' }],
    ['a+/b', true, { ok: false, reason: 'bad-wildcard' }],
    ['+/temp', true, { ok: true, value: 'blackcloud/devices/d1/+/temp' }],
    ['', false, { ok: false, reason: 'empty' }],
  ])('resolveDeviceTopic(d1, %j, wildcards %s)', (topic, wildcards, expected) => {
    expect(resolveDeviceTopic('d1', topic, wildcards)).toEqual(expected);
  });

  it.each([
    ['203.0.113.7', { ok: true, value: { host: '203.0.113.7', port: 62201 } }],
    ['203.0.113.7:4000', { ok: true, value: { host: '203.0.113.7', port: 4000 } }],
    ['spa.example.net:1', { ok: true, value: { host: 'spa.example.net', port: 1 } }],
    ['[2001:db8::1]:4000', { ok: true, value: { host: '2001:db8::1', port: 4000 } }],
    ['2001:db8::1', { ok: true, value: { host: '2001:db8::1', port: 62201 } }],
    ['host:0', { ok: false, reason: 'bad-port' }],
    ['host:70000', { ok: false, reason: 'bad-port' }],
    ['host:', { ok: false, reason: 'bad-port' }],
    [':4000', { ok: false, reason: 'empty-host' }],
  ])('parseServerAddress(%j)', (text, expected) => {
    expect(parseServerAddress(text, 62201)).toEqual(expected);
  });
});

describe('buildKnock', () => {
  const io = { now: () => 1_700_000_000_123, randomBytes: (n: number) => new Uint8Array(n).fill(9) };

  it('builds a native BC1 knock the protocol core opens with the device key', () => {
    const config = parseDeviceConfig({ ...deviceFile(), access: ['tcp/8883', 'udp/5683'] }, '/d.json');
    const knock = buildKnock(config, io);
    expect(knock.format).toBe('native');
    const decoded = decodeBc1(knock.bytes, config.spa.native!.key);
    expect(decoded).toEqual({
      ok: true,
      value: {
        keyId: 42,
        nonce: new Uint8Array(12).fill(9),
        payload: {
          timestampMs: 1_700_000_000_123,
          durationSeconds: 0,
          access: [
            { protocol: 'tcp', port: 8883 },
            { protocol: 'udp', port: 5683 },
          ],
        },
      },
    });
  });

  it('builds an fwknop knock (type 1, allow 0.0.0.0, username) the fwknop decoder accepts', () => {
    const file = deviceFile();
    const config = parseDeviceConfig(
      {
        ...file,
        spa: {
          ...file.spa,
          format: 'fwknop',
          fwknop: { username: 'sensor-1', encryptionKey: FWKNOP_KEY, hmacKey: HMAC_KEY },
        },
      },
      '/d.json',
    );
    const knock = buildKnock(config, {
      ...io,
      randomBytes: (n: number) => new Uint8Array(n).map((_, i) => i * 17),
    });
    expect(knock.format).toBe('fwknop');
    const decoded = decodeFwknop(knock.bytes, {
      encryptionKey: config.spa.fwknop!.encryptionKey,
      hmacKey: config.spa.fwknop!.hmacKey,
      hmacType: 'sha256',
    });
    expect(decoded.ok).toBe(true);
    if (!decoded.ok) return;
    expect(decoded.value).toMatchObject({
      username: 'sensor-1',
      timestamp: 1_700_000_000,
      messageType: 1,
      access: { allowIp: '0.0.0.0', entries: [{ protocol: 'tcp', port: 8883 }] },
    });
  });

  it('refuses a format the device has no keys for, naming the field', () => {
    const config = parseDeviceConfig(deviceFile(), '/d.json');
    expect(() => buildKnock(config, io, 'fwknop')).toThrow(/field "spa\.fwknop" is missing/);
  });

  it('randomDigits draws decimal digits without modulo bias (bytes >= 250 are skipped)', () => {
    const bytes = [255, 250, 3, 249, 12];
    let calls = 0;
    const digits = randomDigits(() => new Uint8Array(bytes.slice(calls++ === 0 ? 0 : 2)), 4);
    expect(digits).toBe('3923');
  });
});

describe('up configuration', () => {
  it('uses the documented defaults', () => {
    expect(resolveUpConfig({})).toMatchObject({
      host: '127.0.0.1',
      advertisedHost: '127.0.0.1',
      spaPort: 62201,
      mqttPort: 8883,
      firewall: 'gate',
      grantSeconds: 30,
      clockWindowMs: 60_000,
      nftTable: 'blackcloud',
      demoDevice: true,
    });
  });

  it('lets flags win over the config file and advertises loopback for a wildcard host', () => {
    const config = resolveUpConfig(
      { spaPort: '4000', host: '0.0.0.0' },
      { source: 'x.yaml', spaPort: 5000, mqttPort: 5001, firewall: 'nftables' },
    );
    expect(config).toMatchObject({
      spaPort: 4000,
      mqttPort: 5001,
      firewall: 'nftables',
      advertisedHost: '127.0.0.1',
    });
  });

  it.each([
    [{ spaPort: '65536' }, '--spa-port'],
    [{ mqttPort: 'abc' }, '--mqtt-port'],
    [{ host: 'localhost' }, '--host'],
    [{ firewall: 'pf' }, '--firewall'],
    [{ broker: 'mqtt://h:1883' }, '--broker'],
    [{ grantSeconds: '0' }, '--grant-seconds'],
    [{ nftTable: 'bad-name' }, '--nft-table'],
  ])('rejects %j naming %s', (flags, flag) => {
    expect(() => resolveUpConfig(flags)).toThrow(LocalConfigError);
    expect(() => resolveUpConfig(flags)).toThrow(new RegExp(`^${flag}: .*received`));
  });

  it('parses --broker into host and port', () => {
    expect(resolveUpConfig({ broker: 'mqtts://[::1]:8884' }).broker).toEqual({
      host: '::1',
      port: 8884,
      url: 'mqtts://[::1]:8884',
    });
  });
});

describe('fwknop hints', () => {
  const input = {
    stanza: 'blackcloud-old-1',
    username: 'old-1',
    server: '192.0.2.1',
    spaPort: 62201,
    access: [{ protocol: 'tcp' as const, port: 8883 }],
    keyBase64: 'K',
    hmacKeyBase64: 'H',
    hmacType: 'sha3-256' as const,
  };

  it('prints the fwknop command line with -s (the receiver grants the observed source)', () => {
    expect(fwknopCommandLine(input)).toBe(
      'fwknop -A tcp/8883 -s -D 192.0.2.1 -p 62201 -U old-1 --use-hmac --hmac-digest-type sha3_256 ' +
        '--key-base64-rijndael K --key-base64-hmac H',
    );
  });

  it('prints the same settings as a .fwknoprc stanza', () => {
    const lines = fwknoprcStanza(input).split('\n');
    expect(lines[0]).toBe('[blackcloud-old-1]');
    expect(lines).toContain('ALLOW_IP            source');
    expect(lines).toContain('HMAC_DIGEST_TYPE    sha3_256');
    expect(lines).toContain('SPA_SERVER_PORT     62201');
  });
});
