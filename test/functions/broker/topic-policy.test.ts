/** The broker's topic policy as a case table: who may publish, subscribe and receive where. */
import { describe, expect, it } from 'vitest';
import { mayPublish, mayReceive, maySubscribe } from '../../../functions/broker/topic-policy.ts';
import { CONTROLLER_IDENTITY, deviceTopic, isValidIdentity } from '../../../functions/core/topics.ts';

const C = CONTROLLER_IDENTITY;

describe('topic policy', () => {
  it('builds device topics', () => {
    expect(deviceTopic('dev-1')).toBe('blackcloud/devices/dev-1');
    expect(deviceTopic('dev-1', 'keys', 'ack')).toBe('blackcloud/devices/dev-1/keys/ack');
  });

  it.each([
    ['dev-1', true],
    ['sensor_01.eu', true],
    [C, true],
    ['a'.repeat(64), true],
    ['a'.repeat(65), false],
    ['', false],
    ['-leading-dash', false],
    ['dev/1', false],
    ['dev+', false],
    ['dev#', false],
    ['$SYS', false],
    ['dev 1', false],
    ['dev\u00001', false],
    [undefined, false],
  ])('identity %j valid: %s', (identity, valid) => {
    expect(isValidIdentity(identity)).toBe(valid);
  });

  it.each([
    // [identity, topic, publish allowed]
    ['dev-1', 'blackcloud/devices/dev-1', true],
    ['dev-1', 'blackcloud/devices/dev-1/telemetry', true],
    ['dev-1', 'blackcloud/devices/dev-2/telemetry', false],
    ['dev-1', 'blackcloud/devices/dev-10/telemetry', false],
    ['dev-1', 'blackcloud/devices/dev-1x', false],
    ['dev-1', 'blackcloud/devices', false],
    ['dev-1', 'other/topic', false],
    ['dev-1', '$SYS/broker', false],
    ['dev-1', 'blackcloud/devices/dev-1/+', false],
    ['dev-1', 'blackcloud/devices/dev-1/#', false],
    ['dev-1', '', false],
    [C, 'blackcloud/devices/dev-2/keys', true],
    [C, 'anything/else', true],
    [C, '$SYS/x', false],
    ['bad/id', 'blackcloud/devices/bad/id', false],
    // key rotation: a device acknowledges only its own keys and never writes a key topic
    ['dev-1', 'blackcloud/keys/dev-1/ack', true],
    ['dev-1', 'blackcloud/keys/dev-2/ack', false],
    ['dev-1', 'blackcloud/keys/dev-1', false],
    ['dev-1', 'blackcloud/keys/dev-1/other', false],
    [C, 'blackcloud/keys/dev-1', true],
  ])('%s publishing to %j: %s', (identity, topic, allowed) => {
    expect(mayPublish(identity, topic)).toBe(allowed);
  });

  it.each([
    // [identity, filter, subscribe allowed]
    ['dev-1', 'blackcloud/devices/dev-1/#', true],
    ['dev-1', 'blackcloud/devices/dev-1/+/x', true],
    ['dev-1', 'blackcloud/devices/dev-1', true],
    ['dev-1', 'blackcloud/devices/+/telemetry', false],
    ['dev-1', 'blackcloud/devices/#', false],
    ['dev-1', 'blackcloud/#', false],
    ['dev-1', '#', false],
    ['dev-1', '+/devices/dev-1/#', false],
    ['dev-1', '$SYS/#', false],
    ['dev-1', 'blackcloud/devices/dev-2/#', false],
    ['dev-1', 'blackcloud/devices/dev-1x/#', false],
    [C, '#', true],
    [C, 'blackcloud/devices/+/keys/ack', true],
    // key rotation: a device reads exactly its own key topic, no wildcard over the key tree
    ['dev-1', 'blackcloud/keys/dev-1', true],
    ['dev-1', 'blackcloud/keys/dev-2', false],
    ['dev-1', 'blackcloud/keys/+', false],
    ['dev-1', 'blackcloud/keys/#', false],
    ['dev-1', 'blackcloud/keys/dev-1/ack', false],
    [C, 'blackcloud/keys/+/ack', true],
  ])('%s subscribing to %j: %s', (identity, filter, allowed) => {
    expect(maySubscribe(identity, filter)).toBe(allowed);
  });

  it.each([
    ['dev-1', 'blackcloud/devices/dev-1/cmd', true],
    ['dev-1', 'blackcloud/devices/dev-2/cmd', false],
    [C, 'blackcloud/devices/dev-2/telemetry', true],
    ['dev-1', 'blackcloud/keys/dev-1', true],
    ['dev-1', 'blackcloud/keys/dev-2', false],
    ['dev-1', 'blackcloud/keys/dev-1/ack', false],
  ])('%s receiving %j: %s', (identity, topic, allowed) => {
    expect(mayReceive(identity, topic)).toBe(allowed);
  });
});
