/**
 * Builds the CDK app: one BlackcloudStack (settings from the `blackcloud` context key, plus the `receivers` key:
 * `-c receivers=3`) plus cdk-nag's AwsSolutions pack as a policy-validation plugin, so an
 * unacknowledged finding fails `app.synth()`. Used by infra/app.ts (the `cdk` entry) and by the tests, so both
 * synthesize the same thing. `cdkJsonContext()` gives tests the feature flags the CLI passes from cdk.json.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { DEFAULT_STACK_NAME } from '../functions/core/deployment.ts';
import { BlackcloudStack } from './blackcloud-stack.ts';
import { REPO_ROOT } from './bundle.ts';
import type { BlackcloudProps } from './config.ts';
import { settingsFromContext, stackNameFromContext, withReceiversFromContext } from './context.ts';

export interface BlackcloudAppOptions {
  /** Settings of the stack. @default - the `blackcloud` context key (cdk.json or -c), else all defaults */
  readonly props?: BlackcloudProps;
  /** @default - the `blackcloud:stackName` context key, else 'Blackcloud' */
  readonly stackName?: string;
  /** Cloud assembly directory. @default - the CLI's (or a temporary directory outside the CLI) */
  readonly outdir?: string;
  /** Context (feature flags). @default - what the CLI passes */
  readonly context?: Record<string, unknown>;
  /** Run cdk-nag's AwsSolutions pack at synth. @default true */
  readonly nag?: boolean;
}

export function createBlackcloudApp(options: BlackcloudAppOptions = {}): {
  app: App;
  stack: BlackcloudStack;
} {
  const app = new App({
    ...(options.outdir ? { outdir: options.outdir } : {}),
    ...(options.context ? { context: options.context } : {}),
  });
  const stackName =
    options.stackName ??
    stackNameFromContext(app.node.tryGetContext('blackcloud:stackName'), DEFAULT_STACK_NAME);
  const props =
    options.props ??
    withReceiversFromContext(
      settingsFromContext(app.node.tryGetContext('blackcloud')),
      app.node.tryGetContext('receivers'),
    );
  const stack = new BlackcloudStack(app, stackName, props);
  if (options.nag ?? true) Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack };
}

/** The `context` object of the repository's cdk.json (feature flags), as the CLI would pass it. */
export function cdkJsonContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(readFileSync(join(REPO_ROOT, 'cdk.json'), 'utf8')) as {
    context?: Record<string, unknown>;
  };
  return { ...(cdkJson.context ?? {}) };
}
