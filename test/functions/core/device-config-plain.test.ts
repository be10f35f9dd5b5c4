/**
 * device.json's plain profile (functions/core/device-config.ts `mqtt.transport: "plain"`) and up's plain-port
 * settings (functions/local/up-config.ts): the fields are named with their fix on error.
 */
import { describe, expect, it } from 'vitest';
import { DeviceConfigError } from '../../../functions/core/config-errors.ts';
import { parseDeviceConfig } from '../../../functions/core/device-config.ts';
import { LocalConfigError, resolveUpConfig } from '../../../functions/local/up-config.ts';

const KEY = Buffer.alloc(32, 7).toString('base64');
const base = (mqtt: unknown, spa: Record<string, unknown> = { native: { keyId: 1, key: KEY } }) => ({
  version: 1,
  deviceId: 'tiny-1',
  spa: { host: '127.0.0.1', port: 62201, ...spa },
  access: ['tcp/1883'],
  mqtt,
});

function failure(input: unknown): DeviceConfigError {
  try {
    parseDeviceConfig(input, '/etc/device.json');
  } catch (error) {
    if (error instanceof DeviceConfigError) return error;
    throw error;
  }
  throw new Error('expected a DeviceConfigError');
}

describe('device.json, mqtt.transport "plain"', () => {
  it('parses { transport: "plain", url: mqtt://… } with no TLS material', () => {
    const config = parseDeviceConfig(base({ transport: 'plain', url: 'mqtt://127.0.0.1:1883' }), '/x/d.json');
    expect(config.mqtt).toEqual({ transport: 'plain', url: 'mqtt://127.0.0.1:1883' });
  });

  it('names the field and the fix: mqtts URL, TLS files, no native key, unknown transport', () => {
    expect(failure(base({ transport: 'plain', url: 'mqtts://127.0.0.1:8883' })).field).toBe('mqtt.url');
    const withCa = failure(base({ transport: 'plain', url: 'mqtt://h:1883', ca: 'ca.crt' }));
    expect(withCa.field).toBe('mqtt.ca');
    expect(withCa.message).toMatch(/not a known field; fix: remove it/);
    const noNative = failure(
      base(
        { transport: 'plain', url: 'mqtt://h:1883' },
        { format: 'fwknop', fwknop: { username: 'u', encryptionKey: KEY, hmacKey: KEY } },
      ),
    );
    expect(noNative.field).toBe('spa.native');
    expect(noNative.message).toMatch(/one-time connect password derives from a native \(BC1\) knock/);
    expect(
      failure(base({ transport: 'udp', url: 'mqtts://h:8883', ca: 'a', cert: 'b', key: 'c' })).field,
    ).toBe('mqtt.transport');
  });

  it('a TLS file keeps its exact field errors and says how a device without TLS is configured', () => {
    const error = failure(base({ url: 'mqtt://h:1883', ca: 'a', cert: 'b', key: 'c' }));
    expect(error.field).toBe('mqtt.url');
    expect(error.message).toMatch(/mqtt\.transport "plain"/);
    expect(failure(base({ url: 'mqtts://h:8883', ca: 'a', key: 'c' })).field).toBe('mqtt.cert');
  });
});

describe('up: --plain-port and --broker-plain', () => {
  it('is off by default, on with --plain-port; --broker-plain needs --broker and sets the guarded port under nftables', () => {
    expect(resolveUpConfig({}).plainPort).toBeUndefined();
    expect(resolveUpConfig({ plainPort: '1883' }).plainPort).toBe(1883);
    expect(() => resolveUpConfig({ plainPort: 'x' })).toThrow(/--plain-port/);
    expect(() => resolveUpConfig({ brokerPlain: 'mqtt://127.0.0.1:1884' })).toThrow(LocalConfigError);
    expect(() =>
      resolveUpConfig({ broker: 'mqtts://127.0.0.1:8884', brokerPlain: 'mqtts://127.0.0.1:1884' }),
    ).toThrow(/--broker-plain: must be mqtt:\/\/host:port/);
    expect(() => resolveUpConfig({ broker: 'mqtts://127.0.0.1:8884', plainPort: '1883' })).toThrow(
      /--plain-port.*--broker-plain/,
    );
    const gate = resolveUpConfig({ broker: 'mqtts://127.0.0.1:8884', brokerPlain: 'mqtt://127.0.0.1:1884' });
    expect(gate.plainPort).toBe(1883);
    expect(gate.brokerPlain).toMatchObject({ host: '127.0.0.1', port: 1884 });
    const nft = resolveUpConfig({
      firewall: 'nftables',
      broker: 'mqtts://127.0.0.1:8884',
      brokerPlain: 'mqtt://127.0.0.1:1884',
    });
    expect(nft.plainPort).toBe(1884);
  });
});
