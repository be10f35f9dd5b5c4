/**
 * The device client library: what a device (or a program acting as one) needs to knock and reach the broker.
 * Imports the protocol core (spa/) and the MQTT client only; the operator commands (`up`, `devices`) live in
 * device-client/commands/ and compose functions/local/.
 */
export { formatAccessSpec, parseAccessSpec } from './access-spec.ts';
export { type BrokerConnectOptions, connectToBroker, readTlsMaterial } from './broker-connection.ts';
export {
  type DeviceConfig,
  type DeviceConfigFile,
  type KnockFormat,
  loadDeviceConfig,
  parseDeviceConfig,
  serializeDeviceConfig,
} from './device-config.ts';
export { BrokerConnectError, DeviceConfigError, UsageError } from './errors.ts';
export { buildKnock, type Knock, type KnockIo } from './knock.ts';
export { type SentDatagram, sendDatagram } from './send-datagram.ts';
export { parseServerAddress, type ServerAddress } from './server-address.ts';
export { DEVICE_TOPIC_ROOT, deviceTopicPrefix, resolveDeviceTopic } from './topic.ts';
