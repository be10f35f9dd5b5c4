/**
 * The CDK app (`cdk.json`: `node infra/app.ts`): one BlackcloudStack, checked by cdk-nag's AwsSolutions pack
 * at every synth (an unacknowledged finding fails the synth). Settings come from the `blackcloud` context key
 * (cdk.json, or `-c blackcloud='{"spaSourceCidrs":["203.0.113.0/24"]}'`) and are validated by the stack; the
 * stack name from `-c blackcloud:stackName=NAME` (default 'Blackcloud'). No environment lookups: the stack is
 * environment-agnostic and synthesizes offline without credentials.
 */
import { createBlackcloudApp } from './blackcloud-app.ts';

createBlackcloudApp().app.synth();
