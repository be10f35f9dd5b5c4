/**
 * The deployment's defaults and hard limits, stated once for the CDK stack (infra/), the AWS receiver, the Lambdas
 * and the operator CLI. Protocol defaults (the SPA port, the clock window, the default grant) are the protocol
 * core's (spa/limits.ts) and are re-exported here so infra/ reads them through functions/core/ alone.
 */
import { DEFAULT_CLOCK_WINDOW_MS, DEFAULT_GRANT_SECONDS, DEFAULT_SPA_PORT } from '../../spa/limits.ts';
import { CONTROLLER_IDENTITY } from './topics.ts';

export { DEFAULT_CLOCK_WINDOW_MS, DEFAULT_GRANT_SECONDS, DEFAULT_SPA_PORT };

/** The stack name `cdk deploy` uses, and the CLI's `--stack` default. */
export const DEFAULT_STACK_NAME = 'Blackcloud';
/** The broker's MQTT-over-TLS port, which grants open. */
export const DEFAULT_BROKER_PORT = 8883;
/**
 * The broker's plain MQTT port (the plain profile, docs/threat-model.md "The plain profile"), when a deployment turns
 * the plain listener on: IANA's MQTT port. Off unless asked for (infra `plainListener`, `up --broker`).
 */
export const DEFAULT_PLAIN_BROKER_PORT = 1883;
/** The MQTT identity (certificate CN) of the key-rotation controller's session. */
export const DEFAULT_CONTROLLER_IDENTITY = CONTROLLER_IDENTITY;

/** SQS's largest DelaySeconds. The revoke message of a grant is delayed by the grant's lifetime. */
export const SQS_MAX_DELAY_SECONDS = 900;
/**
 * The longest grant window the AWS stack can be configured with: the revoke queue's delivery delay, so at most
 * SQS's 900 s. (A knock may still ask for up to MAX_GRANT_SECONDS; beyond 900 s the receiver's timer or the sweeper
 * closes the rule, see functions/aws/sqs-expiry-scheduler.ts.)
 */
export const MAX_DEPLOYED_GRANT_WINDOW_SECONDS = SQS_MAX_DELAY_SECONDS;
/** The longest grant any receiver opens, whatever a knock or a config asks for: one day. */
export const MAX_GRANT_SECONDS = 86_400;

/**
 * Per-device bounds (docs/protocol.md [BC1-9], docs/threat-model.md): one stolen key cannot hold more than this
 * many source addresses open at once (the oldest address's grant is released beyond it), so it cannot fill the
 * firewall's rule slots for the fleet.
 */
export const DEFAULT_MAX_ADDRESSES_PER_DEVICE = 4;
/** The largest per-device address cap a config may set. */
export const MAX_ADDRESSES_PER_DEVICE = 1000;
/** Receivers behind the load balancer, at most (an Auto Scaling group; more is a second stack). */
export const MAX_RECEIVERS = 20;
/** Accepted knocks per device: a token bucket of this burst, refilled at this many per minute. */
export const DEFAULT_DEVICE_KNOCK_BURST = 20;
export const DEFAULT_DEVICE_KNOCKS_PER_MINUTE = 60;
