/**
 * Environment variable names the stack hands to the receiver (systemd EnvironmentFile) and to the Lambdas: the
 * contract with functions/aws/receiver-main.ts, functions/revoker and functions/sweeper. Values are names, ports,
 * URLs and ids, never secrets.
 */
export const ENV = Object.freeze({
  spaPort: 'BLACKCLOUD_SPA_PORT',
  brokerPort: 'BLACKCLOUD_BROKER_PORT',
  nonceTable: 'BLACKCLOUD_NONCE_TABLE',
  devicesTable: 'BLACKCLOUD_DEVICES_TABLE',
  grantsTable: 'BLACKCLOUD_GRANTS_TABLE',
  /** Comma-separated, in the order grants should fill them. */
  brokerSecurityGroupIds: 'BLACKCLOUD_BROKER_SECURITY_GROUP_IDS',
  revokeQueueUrl: 'BLACKCLOUD_REVOKE_QUEUE_URL',
  fleetThingGroup: 'BLACKCLOUD_FLEET_THING_GROUP',
  grantSeconds: 'BLACKCLOUD_GRANT_SECONDS',
  clockWindowSeconds: 'BLACKCLOUD_CLOCK_WINDOW_SECONDS',
  region: 'AWS_REGION',
  // The controller session (key rotation); BLACKCLOUD_BROKER_HOST switches it on.
  keyRotationSeconds: 'BLACKCLOUD_KEY_ROTATION_SECONDS',
  brokerHost: 'BLACKCLOUD_BROKER_HOST',
  brokerTlsServerName: 'BLACKCLOUD_BROKER_TLS_SERVER_NAME',
  controllerCaFile: 'BLACKCLOUD_CONTROLLER_CA_FILE',
  controllerCertFile: 'BLACKCLOUD_CONTROLLER_CERT_FILE',
  controllerKeyFile: 'BLACKCLOUD_CONTROLLER_KEY_FILE',
});

/** Variables the receiver reads that the stack sets only when they differ from the receiver's own default. */
export const OPTIONAL_ENV = Object.freeze({
  /** Inbound rules per broker security group and family (set when the rules-per-group quota was raised). */
  rulesPerGroup: 'BLACKCLOUD_RULES_PER_GROUP',
  /** Source addresses one device may hold grants for at once (functions/core/deployment.ts's default). */
  maxAddressesPerDevice: 'BLACKCLOUD_MAX_ADDRESSES_PER_DEVICE',
  /** The broker's plain MQTT port: set only when the stack turns the plain listener on (grants may open it). */
  plainBrokerPort: 'BLACKCLOUD_PLAIN_BROKER_PORT',
});

/** Variables the scaled receivers (behind the load balancer) get on top of ENV. */
export const SCALED_RECEIVER_ENV = Object.freeze({
  healthPort: 'BLACKCLOUD_HEALTH_PORT',
  shutdown: 'BLACKCLOUD_SHUTDOWN',
  coalesceMs: 'BLACKCLOUD_COALESCE_MS',
  /** The closes lane's coalescing window (revokes), ms: default the opens window (BLACKCLOUD_COALESCE_MS). */
  closeWindowMs: 'BLACKCLOUD_CLOSE_WINDOW_MS',
  ec2Attempts: 'BLACKCLOUD_EC2_ATTEMPTS',
  /** How many receivers share the broker's rule slots: each holds one share (functions/aws/slot-share-lease.ts). */
  receivers: 'BLACKCLOUD_RECEIVERS',
  /** Closed on connect from the broker's session signal (on | off): off behind the load balancer (docs/scaling.md). */
  closeOnConnect: 'BLACKCLOUD_CLOSE_ON_CONNECT',
});

/** One endpoint for every AWS service (moto in the tests); never set by the stack. */
export const AWS_ENDPOINT_ENV = 'BLACKCLOUD_AWS_ENDPOINT';
