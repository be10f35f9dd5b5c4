/**
 * `npx cdk synth` as an operator runs it, on this machine, proven offline: inside a fresh network namespace (no
 * interface but a down loopback, so any network access fails), without AWS credentials or config, with the EC2
 * metadata lookup disabled. It must succeed, write the template, record no missing context (no lookups), and
 * leave no cdk.context.json behind. A bad setting given with -c must fail, naming it, without a stack trace.
 * Needs root and `unshare` (util-linux): a missing tool fails the test, naming it.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STACK_OUTPUTS } from '../../functions/core/stack-outputs.ts';
import { REPO_ROOT } from '../../infra/bundle.ts';
import { runProcess } from '../support/run-process.ts';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const outdirs: string[] = [];
/** A synth bundles three assets; on a loaded 2-core machine it took up to 60 s. The test waits as long as the spawn. */
const SYNTH_TIMEOUT_MS = 120_000;

/** Runs `npx cdk synth -q` in a network namespace with no credentials; returns status and output. */
async function offlineSynth(
  extraArgs: string[],
): Promise<{ status: number | null; output: string; outdir: string }> {
  const outdir = mkdtempSync(join(tmpdir(), 'blackcloud-cli-synth-'));
  outdirs.push(outdir);
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(env)) {
    if (name.startsWith('AWS_') || name.startsWith('CDK_')) delete env[name];
  }
  Object.assign(env, {
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: join(outdir, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(outdir, 'no-aws-credentials'),
  });
  const result = await runProcess(
    'unshare',
    ['--net', '--', 'npx', 'cdk', 'synth', '-q', '-o', outdir, ...extraArgs],
    {
      cwd: REPO_ROOT,
      env,
      timeoutMs: SYNTH_TIMEOUT_MS,
    },
  );
  if (result.error) {
    throw new Error(`'unshare' (util-linux, run as root) is required by this test: ${result.error.message}`);
  }
  return { status: result.status, output: `${result.stdout}\n${result.stderr}`, outdir };
}

describe('npx cdk synth, offline and without credentials', () => {
  let synth: Awaited<ReturnType<typeof offlineSynth>>;
  const contextFile = join(REPO_ROOT, 'cdk.context.json');
  let contextFileBefore: boolean;

  beforeAll(async () => {
    contextFileBefore = existsSync(contextFile);
    synth = await offlineSynth([]);
  }, SYNTH_TIMEOUT_MS);

  afterAll(() => {
    for (const dir of outdirs) rmSync(dir, { recursive: true, force: true });
  });

  it('GIVEN no network and no credentials WHEN synthesizing THEN it succeeds and writes the template', () => {
    expect({ status: synth.status, output: synth.status === 0 ? '' : synth.output }).toEqual({
      status: 0,
      output: '',
    });
    const template = JSON.parse(readFileSync(join(synth.outdir, 'Blackcloud.template.json'), 'utf8')) as {
      Outputs: Record<string, unknown>;
    };
    expect(Object.keys(template.Outputs)).toContain(STACK_OUTPUTS.receiverAddress);
  });

  it('GIVEN the synthesized assembly THEN no context lookup was needed and no cdk.context.json appeared', () => {
    const manifest = JSON.parse(readFileSync(join(synth.outdir, 'manifest.json'), 'utf8')) as {
      missing?: unknown[];
    };
    expect(manifest.missing ?? []).toEqual([]);
    expect(existsSync(contextFile)).toBe(contextFileBefore);
  });

  it(
    'GIVEN -c receivers=3 WHEN synthesizing offline THEN the receivers sit behind a UDP load balancer',
    async () => {
      const scaled = await offlineSynth(['-c', 'receivers=3']);
      expect({ status: scaled.status, output: scaled.status === 0 ? '' : scaled.output }).toEqual({
        status: 0,
        output: '',
      });
      const template = JSON.parse(readFileSync(join(scaled.outdir, 'Blackcloud.template.json'), 'utf8')) as {
        Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }>;
      };
      const types = Object.values(template.Resources).map((r) => r.Type);
      expect(types).toContain('AWS::ElasticLoadBalancingV2::LoadBalancer');
      const group = Object.values(template.Resources).find(
        (r) => r.Type === 'AWS::AutoScaling::AutoScalingGroup',
      );
      expect(group?.Properties?.DesiredCapacity).toBe('3');
    },
    SYNTH_TIMEOUT_MS,
  );

  it(
    'GIVEN a bad setting on the command line WHEN synthesizing THEN it fails naming the prop',
    async () => {
      const bad = await offlineSynth(['-c', 'blackcloud={"grantSeconds":1000}']);
      expect(bad.status).not.toBe(0);
      expect(bad.output).toContain(
        "blackcloud: prop 'grantSeconds' must be an integer from 1 to 900; received 1000. Fix: set grantSeconds " +
          'within 1..900 or leave it out for the default 30\n',
      );
      // The message alone: no Node stack trace around it.
      expect(bad.output).not.toMatch(/^\s+at /m);
      expect(bad.output).not.toContain('file://');
      expect(bad.output).not.toContain('InvalidPropError');
    },
    SYNTH_TIMEOUT_MS,
  );
});
