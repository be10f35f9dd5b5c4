/**
 * Compliance of the synthesized stack: cdk-nag's AwsSolutions pack (cdk-nag 3, a policy-validation plugin: an
 * unacknowledged finding makes `app.synth()` throw) and cfn-lint (preinstalled; a missing cfn-lint fails the test,
 * naming it). The acknowledgements are pinned: each has a reason, and the list is exactly the expected one.
 * A control proves the check is live: the same stack with the broker opened to the internet fails synth.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type App, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nagAcknowledgements } from '../../infra/acknowledgements.ts';
import { cdkJsonContext, createBlackcloudApp } from '../../infra/blackcloud-app.ts';
import type { BlackcloudStack } from '../../infra/blackcloud-stack.ts';
import { runProcess } from '../support/run-process.ts';

/** A synth with cdk-nag, then cfn-lint: 20-25 s on an idle 2-core machine, up to 60 s loaded. As long as the spawns. */
const SYNTH_AND_LINT_TIMEOUT_MS = 120_000;

process.env.AWS_EC2_METADATA_DISABLED = 'true';

/**
 * cfn-lint checks ignored, with the reason: W3005 "dependency already enforced by a GetAtt": aws-cdk-lib's
 * Lambda Function adds an explicit DependsOn on its role next to the Role GetAtt; redundant and harmless.
 */
const CFN_LINT_IGNORED = ['W3005'];

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'blackcloud-compliance-'));
  tempDirs.push(dir);
  return dir;
}

let app: App;
let stack: BlackcloudStack;
let outdir: string;
let synthError: unknown;

beforeAll(() => {
  outdir = tempDir();
  ({ app, stack } = createBlackcloudApp({ outdir, context: cdkJsonContext(), nag: true }));
  try {
    app.synth();
  } catch (error) {
    synthError = error;
  }
});

afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

describe('cdk-nag AwsSolutions', () => {
  it('GIVEN the default stack WHEN synthesized with the AwsSolutions pack THEN no unacknowledged finding remains', () => {
    expect(synthError === undefined ? 'synth succeeded' : String(synthError)).toBe('synth succeeded');
    expect(existsSync(join(outdir, 'Blackcloud.template.json'))).toBe(true);
  });

  it('GIVEN the acknowledgements THEN each is recorded on its construct with a written reason', () => {
    // cdk-nag 3 records { [ruleId]: reason } under Validations.ACKNOWLEDGED_RULES_METADATA_KEY.
    const recorded = app.node.findAll().flatMap((construct) =>
      construct.node.metadata
        .filter((entry) => entry.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
        .flatMap((entry) => Object.entries(entry.data as Record<string, string>))
        .filter(([id]) => id.startsWith('AwsSolutions::'))
        .map(([id, reason]) => ({ path: construct.node.path, id, reason })),
    );
    const expected = nagAcknowledgements(stack);
    expect(recorded).toHaveLength(expected.length);
    for (const { reason } of recorded) expect(reason.length).toBeGreaterThan(60);
    for (const acknowledgement of expected) {
      expect(recorded).toContainEqual({
        path: acknowledgement.scope.node.path,
        id: acknowledgement.id,
        reason: acknowledgement.reason,
      });
    }
  });

  it('GIVEN the acknowledgements THEN the list is exactly the reviewed one (a new finding needs a new review)', () => {
    const list = nagAcknowledgements(stack).map(
      ({ scope, id }) => `${scope.node.path} ${id.replace('AwsSolutions::', '')}`,
    );
    expect(list.sort()).toEqual(
      [
        'Blackcloud/Receiver/SecurityGroup AwsSolutions-EC23',
        'Blackcloud/Receiver/Resource AwsSolutions-EC28',
        'Blackcloud/Receiver/Resource AwsSolutions-EC29',
        'Blackcloud/Broker/Resource AwsSolutions-EC28',
        'Blackcloud/Broker/Resource AwsSolutions-EC29',
        'Blackcloud/Receiver/Resource/InstanceRole AwsSolutions-IAM5[Resource::*]',
        'Blackcloud/Revocation/RevokerRole AwsSolutions-IAM5[Resource::*]',
        'Blackcloud/Revocation/SweeperRole AwsSolutions-IAM5[Resource::*]',
        'Blackcloud/Receiver/Resource/InstanceRole AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:thing/*]',
        'Blackcloud/Revocation/Revoker AwsSolutions-L1',
        'Blackcloud/Revocation/Sweeper AwsSolutions-L1',
      ].sort(),
    );
  });

  it(
    'GIVEN the broker opened to the internet WHEN synthesized THEN cdk-nag fails the synth (the check is live)',
    () => {
      const control = createBlackcloudApp({ outdir: tempDir(), context: cdkJsonContext(), nag: true });
      control.stack.broker.securityGroups[0]!.addIngressRule(
        ec2.Peer.anyIpv4(),
        ec2.Port.tcp(8883),
        'mistake',
      );
      let caught: unknown;
      try {
        control.app.synth();
      } catch (error) {
        caught = error;
      }
      expect(String(caught)).toMatch(/ValidationFailed/);
      const report = readFileSync(join(control.app.outdir, 'validation-report.json'), 'utf8');
      expect(report).toContain('AwsSolutions-EC23');
      expect(report).toContain('Blackcloud/Broker/SecurityGroup');
    },
    SYNTH_AND_LINT_TIMEOUT_MS,
  );
});

/** Runs cfn-lint on a template file; a missing cfn-lint fails, naming it. */
async function cfnLint(template: string): Promise<{ findings: unknown[]; status: number | null }> {
  const probe = await runProcess('cfn-lint', ['--version']);
  if (probe.error || probe.status !== 0) {
    throw new Error(
      `cfn-lint is required for this test and could not run (${probe.error?.message ?? probe.stderr}); ` +
        'install it with `pip install cfn-lint`',
    );
  }
  const result = await runProcess('cfn-lint', [
    '--format',
    'json',
    '--ignore-checks',
    ...CFN_LINT_IGNORED,
    '--',
    template,
  ]);
  return {
    findings: result.stdout.trim() === '' ? [] : (JSON.parse(result.stdout) as unknown[]),
    status: result.status,
  };
}

describe('cfn-lint', () => {
  it(
    'GIVEN the synthesized template WHEN linted THEN cfn-lint reports nothing',
    async () => {
      const { findings, status } = await cfnLint(join(outdir, 'Blackcloud.template.json'));
      expect(findings).toEqual([]);
      expect(status).toBe(0);
    },
    SYNTH_AND_LINT_TIMEOUT_MS,
  );
});

describe('every option switched on', () => {
  it(
    'GIVEN Session Manager, an alarm e-mail, dual-stack, two grant groups, the plain listener and another stack name WHEN synthesized THEN cdk-nag and cfn-lint pass',
    async () => {
      const variantOut = tempDir();
      const variant = createBlackcloudApp({
        outdir: variantOut,
        stackName: 'Edge',
        context: cdkJsonContext(),
        nag: true,
        props: {
          sessionManager: true,
          alarmEmail: 'ops@example.org',
          ipv6: true,
          grantSecurityGroupCount: 2,
          spaSourceCidrs: ['198.51.100.0/24', '2001:db8::/32'],
          plainListener: true,
          plainBrokerPort: 1884,
        },
      });
      expect(() => variant.app.synth()).not.toThrow();
      const ids = nagAcknowledgements(variant.stack).map(({ id }) => id);
      expect(ids).toContain(
        'AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]',
      );
      const { findings, status } = await cfnLint(join(variantOut, 'Edge.template.json'));
      expect(findings).toEqual([]);
      expect(status).toBe(0);
    },
    SYNTH_AND_LINT_TIMEOUT_MS,
  );

  it(
    'GIVEN three receivers behind the load balancer with Session Manager WHEN synthesized THEN cdk-nag and cfn-lint pass',
    async () => {
      const scaledOut = tempDir();
      const scaled = createBlackcloudApp({
        outdir: scaledOut,
        stackName: 'Scaled',
        context: cdkJsonContext(),
        nag: true,
        props: { receivers: 3, sessionManager: true, grantSecurityGroupCount: 5 },
      });
      expect(() => scaled.app.synth()).not.toThrow();
      const list = nagAcknowledgements(scaled.stack).map(({ scope, id }) => `${scope.node.path} ${id}`);
      expect(list).toContain('Scaled/Receiver/LoadBalancer AwsSolutions::AwsSolutions-ELB2');
      expect(list.filter((entry) => entry.startsWith('Scaled/Receiver/Resource'))).toEqual([]);
      const { findings, status } = await cfnLint(join(scaledOut, 'Scaled.template.json'));
      expect(findings).toEqual([]);
      expect(status).toBe(0);
    },
    SYNTH_AND_LINT_TIMEOUT_MS,
  );
});
