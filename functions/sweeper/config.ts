/**
 * The sweeper Lambda's configuration from its environment (set by the infra stack), validated once at cold start:
 * AWS_REGION, BLACKCLOUD_BROKER_SECURITY_GROUP_IDS, BLACKCLOUD_GRANTS_TABLE, BLACKCLOUD_AWS_ENDPOINT (tests only).
 */
import { commonAwsVars, type Env, type EnvConfig, readEnv } from '../aws/env-config.ts';

export const sweeperVars = {
  region: commonAwsVars.region,
  endpoint: commonAwsVars.endpoint,
  brokerSecurityGroupIds: commonAwsVars.brokerSecurityGroupIds,
  grantsTable: commonAwsVars.grantsTable,
} as const;

export type SweeperConfig = EnvConfig<typeof sweeperVars>;

export function loadSweeperConfig(env: Env = process.env): SweeperConfig {
  return readEnv(env, sweeperVars, 'blackcloud sweeper Lambda');
}
