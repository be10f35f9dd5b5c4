/**
 * The revoker Lambda's configuration from its environment (set by the infra stack), validated once at cold start:
 * AWS_REGION, BLACKCLOUD_BROKER_SECURITY_GROUP_IDS, BLACKCLOUD_GRANTS_TABLE, BLACKCLOUD_AWS_ENDPOINT (tests only).
 */
import { commonAwsVars, type Env, type EnvConfig, readEnv } from '../aws/env-config.ts';

export const revokerVars = {
  region: commonAwsVars.region,
  endpoint: commonAwsVars.endpoint,
  brokerSecurityGroupIds: commonAwsVars.brokerSecurityGroupIds,
  grantsTable: commonAwsVars.grantsTable,
} as const;

export type RevokerConfig = EnvConfig<typeof revokerVars>;

export function loadRevokerConfig(env: Env = process.env): RevokerConfig {
  return readEnv(env, revokerVars, 'blackcloud revoker Lambda');
}
