/**
 * The connection-log parser (functions/broker/mosquitto-session-log.ts) on lines copied from a real Mosquitto 2.0.11
 * with `log_dest topic` (payloads of `$SYS/broker/log/N`, IPv4 and IPv6 listeners), on hostile client ids, and on
 * garbage: it never throws and its client-id map stays bounded.
 */
import { describe, expect, it } from 'vitest';
import { parseSessionLogLine, SessionLog } from '../../../functions/broker/mosquitto-session-log.ts';

describe('parseSessionLogLine: real Mosquitto 2.0.11 lines', () => {
  it('GIVEN an IPv4 connect line WHEN parsed THEN it is the session with its username, address and port', () => {
    expect(
      parseSessionLogLine(
        "1796222731: New client connected from 127.0.0.1:47814 as cid-1 (p2, c1, k60, u'dev-1').",
      ),
    ).toEqual({ kind: 'connected', clientId: 'cid-1', username: 'dev-1', address: '127.0.0.1', port: 47814 });
  });

  it('GIVEN an IPv6 connect line (MQTT 5) WHEN parsed THEN the address is the text before the last colon', () => {
    expect(
      parseSessionLogLine(
        "1796222731: New client connected from ::1:50236 as cid-6 (p5, c1, k60, u'dev-2').",
      ),
    ).toEqual({ kind: 'connected', clientId: 'cid-6', username: 'dev-2', address: '::1', port: 50236 });
    expect(
      parseSessionLogLine(
        "New client connected from 2001:db8::7:1883 as a b (p2, c0, k0, u'blackcloud-controller').",
      ),
    ).toMatchObject({
      clientId: 'a b',
      username: 'blackcloud-controller',
      address: '2001:db8::7',
      port: 1883,
    });
  });

  it('GIVEN every way 2.0.11 ends a session WHEN parsed THEN each is the disconnect of that client id', () => {
    for (const ending of [
      'disconnected.',
      'closed its connection.',
      'has exceeded timeout, disconnecting.',
      'been disconnected by administrative action.',
      'already connected, closing old connection.',
      'disconnected, not authorised.',
      'disconnected due to protocol error.',
      'disconnected due to malformed packet.',
      'disconnected due to QoS too high or retain not supported.',
      'disconnected: Connection reset by peer.',
    ]) {
      expect(parseSessionLogLine(`1796222732: Client cid with space ${ending}`)).toEqual({
        kind: 'disconnected',
        clientId: 'cid with space',
      });
    }
  });

  it('GIVEN other notices and a connect without username WHEN parsed THEN they are no event', () => {
    for (const line of [
      '1796222731: New connection from 127.0.0.1:47814 on port 18931.',
      '1796222732: New client connected from 127.0.0.1:47820 as auto-6344971B (p2, c1, k60).',
      '1796222725: mosquitto version 2.0.11 running',
      'Client connection from 1.2.3.4 denied: max_connections exceeded.',
      'Client  disconnected.',
      '',
    ]) {
      expect(parseSessionLogLine(line)).toBeUndefined();
    }
  });
});

describe('parseSessionLogLine: hostile client ids', () => {
  it("GIVEN a client id shaped like another device's tail WHEN parsed THEN the username is still the last field", () => {
    const line =
      "New client connected from 10.0.0.9:4000 as x (p2, c1, k60, u'victim'). (p2, c1, k60, u'mallory').";
    expect(parseSessionLogLine(line)).toMatchObject({
      username: 'mallory',
      clientId: "x (p2, c1, k60, u'victim').",
      address: '10.0.0.9',
    });
  });

  it('GIVEN a client id holding a newline and a forged line WHEN parsed THEN no forged event comes out', () => {
    const forged =
      "New client connected from 10.0.0.9:4000 as a\nNew client connected from 1.1.1.1:1 as b (p2, c1, k60, u'victim').";
    expect(parseSessionLogLine(`${forged} (p2, c1, k60, u'mallory').`)).toMatchObject({
      username: 'mallory',
    });
    expect(parseSessionLogLine('Client a\nClient victim disconnected.')).toEqual({
      kind: 'disconnected',
      clientId: 'a\nClient victim',
    });
  });

  it('GIVEN a username outside the device-id alphabet or a bad port WHEN parsed THEN no event', () => {
    expect(
      parseSessionLogLine("New client connected from 1.2.3.4:5 as c (p2, c1, k60, u'a/b')."),
    ).toBeUndefined();
    expect(
      parseSessionLogLine("New client connected from 1.2.3.4:99999 as c (p2, c1, k60, u'dev-1')."),
    ).toBeUndefined();
  });

  it('GIVEN any input WHEN parsed THEN it never throws', () => {
    for (const input of [
      undefined,
      null,
      42,
      {},
      [],
      Buffer.from('x'),
      'x'.repeat(200_000),
      '\u0000Client \u0000 disconnected.',
    ]) {
      expect(() => parseSessionLogLine(input)).not.toThrow();
    }
  });
});

describe('SessionLog: the client-id map', () => {
  it('GIVEN a connect then its disconnect WHEN read THEN the disconnect names the device and the map forgets it', () => {
    const log = new SessionLog();
    log.read("1: New client connected from 127.0.0.1:5000 as c1 (p2, c1, k60, u'dev-1').");
    expect(log.size).toBe(1);
    expect(log.read('2: Client c1 closed its connection.')).toEqual({
      kind: 'disconnected',
      clientId: 'c1',
      username: 'dev-1',
      address: '127.0.0.1',
      port: 5000,
    });
    expect(log.size).toBe(0);
    expect(log.read('3: Client c1 disconnected.')).toEqual({ kind: 'disconnected', clientId: 'c1' });
  });

  it('GIVEN more client ids than its bound WHEN read THEN the oldest are forgotten and the size stays at the bound', () => {
    const log = new SessionLog(3);
    for (let i = 0; i < 10; i += 1) {
      log.read(`New client connected from 10.0.0.${i}:1 as c${i} (p2, c1, k60, u'dev-${i}').`);
    }
    expect(log.size).toBe(3);
    expect(log.read('Client c0 disconnected.')).toEqual({ kind: 'disconnected', clientId: 'c0' });
    expect(log.read('Client c9 disconnected.')).toMatchObject({ username: 'dev-9' });
  });

  it('GIVEN garbage WHEN read THEN no event and no throw', () => {
    const log = new SessionLog();
    for (const input of [undefined, 7, 'Client', "New client connected from x as y (p2, c1, k60, u'z')."]) {
      expect(log.read(input)).toBeUndefined();
    }
    expect(log.size).toBe(0);
  });
});
