import { describe, expect, it } from 'vitest';
import { hostAddress, hostOfCidr, InvalidAddressError } from '../../../functions/aws/address.ts';
import {
  formatRuleDescription,
  parseRuleDescription,
  RULE_DESCRIPTION_MAX_LENGTH,
  toEpochSeconds,
} from '../../../functions/aws/rule-description.ts';
import { hostRulesOf, ruleCounts, rulesForGrant, toIpPermissions } from '../../../functions/aws/sg-rules.ts';

const TCP = { protocol: 'tcp', port: 8883 } as const;
const EC2_DESCRIPTION_CHARSET = /^[a-zA-Z0-9 ._\-:/()#,@[\]+=&;{}!$*]*$/;

describe('rule description', () => {
  it('formats blackcloud:<deviceId>:exp=<epochSeconds> and parses it back', () => {
    const text = formatRuleDescription('dev-1', 1_700_000_030);
    expect(text).toBe('blackcloud:dev-1:exp=1700000030');
    expect(parseRuleDescription(text)).toEqual({ deviceId: 'dev-1', expiresAtSeconds: 1_700_000_030 });
  });

  it('keeps colons in device ids (IoT thing names allow them)', () => {
    expect(parseRuleDescription(formatRuleDescription('site:a:dev', 5))).toEqual({
      deviceId: 'site:a:dev',
      expiresAtSeconds: 5,
    });
  });

  it('replaces characters EC2 refuses and truncates to 255 characters', () => {
    const text = formatRuleDescription(`bad~id%with"quotes${'x'.repeat(400)}`, 1_700_000_000);
    expect(text.length).toBe(RULE_DESCRIPTION_MAX_LENGTH);
    expect(text).toMatch(EC2_DESCRIPTION_CHARSET);
    expect(text.startsWith('blackcloud:bad_id_with_quotes')).toBe(true);
    expect(parseRuleDescription(text)?.expiresAtSeconds).toBe(1_700_000_000);
  });

  it.each([
    [undefined],
    [''],
    ['operator rule'],
    ['blackcloud:dev-1'],
    ['blackcloud:dev-1:exp='],
    ['blackcloud:dev-1:exp=12x'],
    ['xblackcloud:dev-1:exp=5'],
    ['blackcloud:dev-1:exp=1234567890123'],
  ])('does not take %j for one of ours', (text) => {
    expect(parseRuleDescription(text)).toBeUndefined();
  });

  it('rounds expiry up to the second', () => {
    expect(toEpochSeconds(1_700_000_000_000)).toBe(1_700_000_000);
    expect(toEpochSeconds(1_700_000_000_001)).toBe(1_700_000_001);
  });
});

describe('host addresses', () => {
  it.each([
    ['203.0.113.7', 4, '203.0.113.7/32'],
    ['::ffff:203.0.113.7', 4, '203.0.113.7/32'],
    ['2001:DB8:0:0:0:0:0:7', 6, '2001:db8::7/128'],
    ['2001:db8::7', 6, '2001:db8::7/128'],
  ])('%s → %s', (text, family, cidr) => {
    expect(hostAddress(text)).toMatchObject({ family, cidr });
  });

  it.each([['fe80::1%eth0'], ['203.0.113.0/24'], ['example.com'], ['']])('refuses %j', (text) => {
    expect(() => hostAddress(text)).toThrow(InvalidAddressError);
  });

  it('reads only single-host CIDRs', () => {
    expect(hostOfCidr('203.0.113.7/32')?.address).toBe('203.0.113.7');
    expect(hostOfCidr('2001:db8::7/128')?.address).toBe('2001:db8::7');
    expect(hostOfCidr('203.0.113.0/24')).toBeUndefined();
    expect(hostOfCidr('2001:db8::/64')).toBeUndefined();
  });
});

describe('rules and IpPermissions', () => {
  it('opens only broker entries, each once', () => {
    const { rules, dropped } = rulesForGrant(
      {
        address: '203.0.113.7',
        access: [
          { protocol: 'tcp', port: 8883 },
          { protocol: 'tcp', port: 22 },
          { protocol: 'tcp', port: 8883 },
        ],
      },
      [{ protocol: 'tcp', port: 8883 }],
    );
    expect(rules).toEqual([{ protocol: 'tcp', port: 8883, family: 4, cidr: '203.0.113.7/32' }]);
    expect(dropped).toEqual([{ protocol: 'tcp', port: 22 }]);
  });

  it('groups ranges per port and family and never repeats a CIDR in one permission', () => {
    const v4 = { protocol: 'tcp' as const, port: 8883, family: 4 as const };
    const permissions = toIpPermissions([
      { spec: { ...v4, cidr: '198.51.100.1/32' }, description: 'a' },
      { spec: { ...v4, cidr: '198.51.100.2/32' }, description: 'b' },
      { spec: { ...v4, cidr: '198.51.100.1/32' }, description: 'c' },
      { spec: { protocol: 'tcp', port: 8883, family: 6, cidr: '2001:db8::1/128' }, description: 'd' },
      { spec: { ...v4, port: 8884, cidr: '198.51.100.1/32' } },
    ]);
    expect(permissions).toEqual([
      {
        IpProtocol: 'tcp',
        FromPort: 8883,
        ToPort: 8883,
        IpRanges: [
          { CidrIp: '198.51.100.1/32', Description: 'c' },
          { CidrIp: '198.51.100.2/32', Description: 'b' },
        ],
        Ipv6Ranges: [{ CidrIpv6: '2001:db8::1/128', Description: 'd' }],
      },
      { IpProtocol: 'tcp', FromPort: 8884, ToPort: 8884, IpRanges: [{ CidrIp: '198.51.100.1/32' }] },
    ]);
  });

  it("reads blackcloud prefix rules (prefix grants) but no one else's prefix", () => {
    const rules = hostRulesOf('sg-1', [
      {
        IpProtocol: 'tcp',
        FromPort: 8883,
        ToPort: 8883,
        IpRanges: [
          { CidrIp: '203.0.113.0/24', Description: 'blackcloud:cell:exp=9' },
          { CidrIp: '192.0.2.0/24', Description: 'operator rule' },
          { CidrIp: '198.51.100.0/23' },
        ],
        Ipv6Ranges: [{ CidrIpv6: '2001:db8:aa:bb::/64', Description: 'blackcloud:cell6:exp=9' }],
      },
    ]);
    expect(rules.map((rule) => [rule.cidr, rule.family, rule.blackcloud?.deviceId])).toEqual([
      ['203.0.113.0/24', 4, 'cell'],
      ['2001:db8:aa:bb::/64', 6, 'cell6'],
    ]);
    expect(rulesForGrant({ address: '203.0.113.0', prefixLength: 24, access: [TCP] }, [TCP]).rules).toEqual([
      { protocol: 'tcp', port: 8883, family: 4, cidr: '203.0.113.0/24' },
    ]);
    expect(() => rulesForGrant({ address: '203.0.113.9', prefixLength: 24, access: [TCP] }, [TCP])).toThrow(
      /not a network prefix of \/16 or narrower/,
    );
  });

  it('reads described permissions: single-port host rules only, blackcloud ones marked; counts per family', () => {
    const permissions = [
      {
        IpProtocol: 'tcp',
        FromPort: 8883,
        ToPort: 8883,
        IpRanges: [
          { CidrIp: '198.51.100.1/32', Description: 'blackcloud:d:exp=9' },
          { CidrIp: '198.51.100.2/32' },
          { CidrIp: '10.0.0.0/8', Description: 'blackcloud:x:exp=1' }, // wider than any prefix grant
        ],
        Ipv6Ranges: [{ CidrIpv6: '2001:db8::1/128', Description: 'blackcloud:e:exp=10' }],
        UserIdGroupPairs: [{ GroupId: 'sg-receiver' }],
      },
      { IpProtocol: 'tcp', FromPort: 8000, ToPort: 9000, IpRanges: [{ CidrIp: '198.51.100.3/32' }] },
      { IpProtocol: '-1', IpRanges: [{ CidrIp: '198.51.100.4/32' }] },
    ];
    expect(hostRulesOf('sg-1', permissions)).toEqual([
      {
        protocol: 'tcp',
        port: 8883,
        family: 4,
        cidr: '198.51.100.1/32',
        groupId: 'sg-1',
        description: 'blackcloud:d:exp=9',
        blackcloud: { deviceId: 'd', expiresAtSeconds: 9 },
      },
      {
        protocol: 'tcp',
        port: 8883,
        family: 4,
        cidr: '198.51.100.2/32',
        groupId: 'sg-1',
        description: undefined,
        blackcloud: undefined,
      },
      {
        protocol: 'tcp',
        port: 8883,
        family: 6,
        cidr: '2001:db8::1/128',
        groupId: 'sg-1',
        description: 'blackcloud:e:exp=10',
        blackcloud: { deviceId: 'e', expiresAtSeconds: 10 },
      },
    ]);
    expect(ruleCounts(permissions)).toEqual({ 4: 6, 6: 1 });
  });
});
