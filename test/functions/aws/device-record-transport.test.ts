/**
 * The `transport` thing attribute (functions/aws/device-record.ts): `plain` marks a device of the plain profile,
 * `tls` or no attribute is the default mutual TLS, anything else is refused naming the attribute and the fix.
 * Pure. (The receiver acting on it is test/functions/aws/plain-profile.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { parseThingAttributes } from '../../../functions/aws/device-record.ts';
import { DeviceRecordError } from '../../../functions/aws/errors.ts';

const base = { enabled: 'true', allowedAccess: 'tcp/1883' };

describe('thing attribute transport', () => {
  it('GIVEN transport=plain THEN the policy names the plain transport', () => {
    expect(parseThingAttributes('p-1', { ...base, transport: 'plain' }, 30)).toEqual({
      enabled: true,
      allowedAccess: [{ protocol: 'tcp', port: 1883 }],
      maxOpenSeconds: 30,
      transport: 'plain',
    });
    expect(
      parseThingAttributes('p-1', { ...base, transport: 'plain', grantPrefix: 'ipv4=24' }, 30).transport,
    ).toBe('plain');
  });

  it.each([
    ['no attribute', {}],
    ['transport=tls', { transport: 'tls' }],
  ])('GIVEN %s THEN the policy carries no transport (tls, the default)', (_label, extra) => {
    expect(parseThingAttributes('t-1', { ...base, ...extra }, 30)).not.toHaveProperty('transport');
  });

  it.each(['PLAIN', 'tcp', ''])(
    'GIVEN transport=%j THEN it is refused naming the attribute and the fix',
    (value) => {
      const parse = () => parseThingAttributes('t-1', { ...base, transport: value }, 30);
      expect(parse).toThrow(DeviceRecordError);
      expect(parse).toThrow(
        `thing "t-1" attribute transport=${JSON.stringify(value)}: set it to one of tls, plain`,
      );
    },
  );
});
