/**
 * The device client library: what a device (or a program acting as one) needs to knock and reach the broker; the
 * entry of the npm package @blackcloud/device (docs/install.md).
 * Imports the protocol core (spa/), the shared vocabulary (functions/core/) and the MQTT client only; the operator
 * commands (`up`, `devices`) live in
 * cli/commands/ and compose functions/local/.
 */
export { formatAccessSpec, parseAccessSpec } from '../functions/core/access-spec.ts';
export { DeviceConfigError } from '../functions/core/config-errors.ts';
export {
  type DeviceConfig,
  type DeviceConfigFile,
  type KnockFormat,
  parseDeviceConfig,
  serializeDeviceConfig,
} from '../functions/core/device-config.ts';
export { DEVICE_TOPIC_ROOT, deviceTopicPrefix, resolveDeviceTopic } from '../functions/core/topics.ts';
export { type BrokerConnectOptions, connectToBroker, readTlsMaterial } from './broker-connection.ts';
export {
  type BackoffPolicy,
  backoffDelayMs,
  type ConnectDeviceOptions,
  connectDevice,
  DEFAULT_BACKOFF,
  type DeviceClient,
  type DeviceEvent,
  type DeviceEvents,
  type DeviceSession,
  type GiveUpEvent,
} from './connect-device.ts';
export { BrokerConnectError, SessionEndedError, type SessionEndReason } from './errors.ts';
export { type KeyListenerEvent, listenForKeys } from './key-listener.ts';
export { buildKnock, type Knock, type KnockIo } from './knock.ts';
export { loadDeviceConfig } from './load-device-config.ts';
export { type SentDatagram, sendDatagram } from './send-datagram.ts';
export { parseServerAddress, type ServerAddress } from './server-address.ts';
