/**
 * The SDK clients of the operator CLI (`blackcloud ... --aws`), created once per command: region and credentials
 * from the standard chain (AWS_REGION / AWS_PROFILE / ~/.aws/config, env keys, SSO, instance role) unless
 * --region is given; `BLACKCLOUD_AWS_ENDPOINT` points them all at one server (moto in tests), as for the
 * receiver (functions/aws/clients.ts, which creates the data-plane clients the same way).
 *
 * `explainAwsError` turns the SDK's "no credentials" / "no region" failures into one line naming the fix.
 */
import { CloudFormationClient } from '@aws-sdk/client-cloudformation';
import { CloudWatchLogsClient } from '@aws-sdk/client-cloudwatch-logs';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { EC2Client } from '@aws-sdk/client-ec2';
import { IoTClient } from '@aws-sdk/client-iot';
import { FleetError } from './fleet.ts';

export interface OperatorClients {
  readonly cloudformation: CloudFormationClient;
  readonly logs: CloudWatchLogsClient;
  readonly iot: IoTClient;
  readonly dynamodb: DynamoDBClient;
  readonly ec2: EC2Client;
}

export interface OperatorClientOptions {
  readonly region?: string | undefined;
  readonly endpoint?: string | undefined;
}

export function createOperatorClients(options: OperatorClientOptions): OperatorClients {
  const config = {
    ...(options.region === undefined ? {} : { region: options.region }),
    ...(options.endpoint === undefined || options.endpoint === '' ? {} : { endpoint: options.endpoint }),
    maxAttempts: 3,
  };
  return {
    cloudformation: new CloudFormationClient(config),
    logs: new CloudWatchLogsClient(config),
    iot: new IoTClient(config),
    dynamodb: new DynamoDBClient(config),
    // The security-group code retries throttling itself (retry.ts); the SDK must not multiply the calls.
    ec2: new EC2Client({ ...config, maxAttempts: 1 }),
  };
}

export function destroyOperatorClients(clients: OperatorClients): void {
  for (const client of Object.values(clients)) (client as { destroy(): void }).destroy();
}

/** The SDK's configuration failures as one line with the fix; anything else is returned as is. */
export function explainAwsError(error: unknown): unknown {
  const name = error instanceof Error ? error.name : '';
  const message = error instanceof Error ? error.message : String(error);
  if (/Region is missing|Region not accepted: region=""/i.test(message)) {
    return new FleetError(
      'no AWS region: pass --region REGION, or set AWS_REGION (or a region in your AWS profile, AWS_PROFILE)',
      { cause: error },
    );
  }
  const badRegion = /Region not accepted: region=("[^"]*")/.exec(message);
  if (badRegion !== null) {
    return new FleetError(
      `region ${badRegion[1]} is not a valid AWS region; fix: pass --region like eu-west-1`,
      {
        cause: error,
      },
    );
  }
  if (name === 'CredentialsProviderError' || /Could not load credentials/i.test(message)) {
    return new FleetError(
      'no AWS credentials found (standard chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ' +
        '~/.aws, SSO, instance role); fix: "aws configure" or "aws sso login", or export AWS_PROFILE',
      { cause: error },
    );
  }
  if (
    /UnrecognizedClientException|InvalidClientTokenId|ExpiredToken|security token/i.test(`${name} ${message}`)
  ) {
    return new FleetError(
      `AWS refused the credentials (${name}: ${message}); fix: refresh them ("aws sso login", new keys)`,
      { cause: error },
    );
  }
  return error;
}
