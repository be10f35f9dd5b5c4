/**
 * The CDK app (`cdk.json`: `node infra/app.ts`): one BlackcloudStack, checked by cdk-nag's AwsSolutions pack
 * at every synth (an unacknowledged finding fails the synth). Settings come from the `blackcloud` context key
 * (cdk.json, or `-c blackcloud='{"spaSourceCidrs":["203.0.113.0/24"]}'`) and are validated by the stack; the
 * stack name from `-c blackcloud:stackName=NAME` (default 'Blackcloud'). No environment lookups: the stack is
 * environment-agnostic and synthesizes offline without credentials.
 *
 * A bad setting (`InvalidPropError`) or an entry that does not bundle (`BundlingError`) is printed as its one-line
 * message, which names the setting and the fix, and the synth exits 1: no Node stack trace around it. Any other
 * error is a defect and keeps its stack.
 */
import { createBlackcloudApp } from './blackcloud-app.ts';
import { BundlingError, InvalidPropError } from './errors.ts';

try {
  createBlackcloudApp().app.synth();
} catch (error) {
  if (!(error instanceof InvalidPropError || error instanceof BundlingError)) throw error;
  process.stderr.write(`${error.message}\n`);
  process.exitCode = 1;
}
