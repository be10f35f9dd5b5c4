/**
 * The kernel pre-filter on the AWS receiver host (infra/host/receiver-host.ts), exercised for real on this machine:
 * - the unit applies the rendered table with `ExecStartPre=-+nft` and removes it with `ExecStopPost=-+nft`, while
 *   the receiver itself keeps no capability;
 * - the rendered files are the one ruleset (functions/local/prefilter-ruleset.ts) for the SPA port, and real nft
 *   applies them in a private network namespace (`unshare -n`, root): the table appears, the removal deletes it
 *   and is safe when the table is absent;
 * - the counts script (the timer's Python) turns two readings of the counters into lines with their increase,
 *   counts a recreated table from zero, and writes nothing without a table; the metric filter sums `$.dropped`;
 * - the synthesized stack has the PrefilterDropped metric filter, the boot script writes the files and enables
 *   the timer, and nftables is installed.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { prefilterTableText } from '../../functions/local/prefilter-ruleset.ts';
import { AUDIT_METRICS } from '../../infra/constructs/audit.ts';
import {
  PREFILTER_EVENT_TYPE,
  PREFILTER_REMOVE_FILE,
  PREFILTER_RULES_FILE,
  PREFILTER_TABLE,
  prefilterCountsUnits,
  prefilterFiles,
  receiverBootCommands,
  receiverPackageCommands,
  receiverUnit,
} from '../../infra/host/receiver-host.ts';

const work = mkdtempSync(join(tmpdir(), 'bc-prefilter-host-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Runs `script` (sh) in a fresh network namespace of its own, as root; returns its stdout. */
function inPrivateNetns(script: string): string {
  return execFileSync('unshare', ['-n', 'sh', '-c', script], { encoding: 'utf8' });
}

const bootScript = () =>
  receiverBootCommands({
    spaPort: 62_201,
    downloadedBundle: '/var/tmp/receiver.mjs',
    environment: { AWS_REGION: 'eu-west-1' },
    controllerTlsSecretName: 'secret',
    logGroupName: 'audit',
    region: 'eu-west-1',
  }).join('\n');

describe('the kernel pre-filter on the AWS receiver host', () => {
  it('GIVEN the receiver unit THEN root nft applies the table before the receiver and removes it after, the receiver has no capability', () => {
    const lines = receiverUnit({ spaPort: 62_201 }).split('\n');
    expect(lines).toContain(`ExecStartPre=-+/usr/sbin/nft -f ${PREFILTER_RULES_FILE}`);
    expect(lines).toContain(`ExecStopPost=-+/usr/sbin/nft -f ${PREFILTER_REMOVE_FILE}`);
    expect(lines).toContain('CapabilityBoundingSet=');
    expect(lines).toContain('AmbientCapabilities=');
    expect(lines.join('\n')).not.toContain('CAP_NET_ADMIN');
    const start = lines.findIndex((line) => line.startsWith('ExecStart='));
    expect(lines.findIndex((line) => line.startsWith('ExecStartPre='))).toBeLessThan(start);
  });

  it('GIVEN the rendered files THEN they are the one ruleset for the SPA port, and real nft applies and removes them', () => {
    const files = prefilterFiles({ spaPort: 62_201 });
    expect(files.rules).toBe(
      prefilterTableText({ table: PREFILTER_TABLE, port: 62_201, hook: { kind: 'inet-input' } }),
    );
    const rules = join(work, 'prefilter.nft');
    const remove = join(work, 'prefilter-remove.nft');
    writeFileSync(rules, files.rules);
    writeFileSync(remove, files.remove);
    const listed = inPrivateNetns(
      `nft -f ${remove} && nft -f ${rules} && nft -f ${rules} && nft list tables && echo --- && nft -f ${remove} && nft list tables`,
    );
    const [applied, removed] = listed.split('---');
    expect(applied).toContain(`table inet ${PREFILTER_TABLE}`);
    expect(removed).not.toContain(PREFILTER_TABLE);
    const chain = inPrivateNetns(`nft -f ${rules} && nft list chain inet ${PREFILTER_TABLE} screen`);
    expect(chain).toContain('udp dport 62201 jump spa');
  });

  it('GIVEN two readings of the counters THEN the timer script appends their increase; a recreated table counts from zero; no table, no line', () => {
    const fakeNft = join(work, 'fake-nft');
    const counters = join(work, 'counters.json');
    const writeCounters = (values: Record<string, number>) =>
      writeFileSync(
        counters,
        JSON.stringify({
          nftables: [
            { metainfo: { version: '1.0.6' } },
            { table: { family: 'inet', name: PREFILTER_TABLE } },
            ...Object.entries(values).map(([name, packets]) => ({
              counter: { family: 'inet', name, table: PREFILTER_TABLE, packets, bytes: packets * 40 },
            })),
            { counter: { family: 'inet', name: 'length', table: 'someone_else', packets: 999, bytes: 1 } },
          ],
        }),
      );
    writeFileSync(fakeNft, `#!/bin/sh\n[ -f ${counters} ] || exit 1\ncat ${counters}\n`);
    chmodSync(fakeNft, 0o755);
    const log = join(work, 'prefilter.log');
    const state = join(work, 'prefilter-state.json');
    const script = join(work, 'prefilter-counts.py');
    writeFileSync(script, prefilterCountsUnits({ logFile: log, stateFile: state, nft: fakeNft }).script);
    const run = () => execFileSync('python3', [script]);
    const lines = () =>
      readFileSync(log, 'utf8')
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, number | string>);

    writeCounters({ length: 10, bc1_magic: 2, fwknop_base64: 3, rate: 5, passed: 7 });
    run();
    writeCounters({ length: 25, bc1_magic: 2, fwknop_base64: 4, rate: 105, passed: 9 });
    run();
    writeCounters({ length: 1, bc1_magic: 0, fwknop_base64: 0, rate: 0, passed: 1 }); // receiver restarted
    run();
    const [first, second, third] = lines();
    expect(first).toMatchObject({ type: PREFILTER_EVENT_TYPE, dropped: 20, length: 10, rate: 5, passed: 7 });
    expect(second).toMatchObject({
      dropped: 116,
      length: 15,
      bc1_magic: 0,
      fwknop_base64: 1,
      rate: 100,
      passed: 2,
    });
    expect(third).toMatchObject({ dropped: 1, length: 1, passed: 1 });
    expect(Number.isInteger(first!.time)).toBe(true);

    rmSync(counters); // no table: nft fails
    run();
    expect(lines()).toHaveLength(3);
    expect(AUDIT_METRICS.prefilterDropped).toEqual({
      metricName: 'PrefilterDropped',
      pattern: `{ $.type = "${PREFILTER_EVENT_TYPE}" }`,
      value: '$.dropped',
    });
  });

  it('GIVEN the boot script THEN it installs nftables, writes both nft files 0600 (the table gzip + base64: user data is small) and enables the counts timer; it parses as bash', () => {
    const boot = bootScript();
    expect(receiverPackageCommands().join('\n')).toMatch(/dnf install -y .*\bnftables\b/);
    const written = boot
      .split('\n')
      .find((line) => line.endsWith(`| base64 -d | gunzip > ${PREFILTER_RULES_FILE}`));
    const encoded = /^echo '([A-Za-z0-9+/=]+)'/.exec(written ?? '')?.[1];
    expect(gunzipSync(Buffer.from(encoded ?? '', 'base64')).toString('utf8')).toBe(
      prefilterFiles({ spaPort: 62_201 }).rules,
    );
    expect(boot).toContain(`chmod 0600 ${PREFILTER_RULES_FILE} ${PREFILTER_REMOVE_FILE}`);
    expect(boot).toMatch(/systemctl enable --now .*blackcloud-prefilter-counts\.timer/);
    execFileSync('bash', ['-n'], { input: [...receiverPackageCommands(), boot].join('\n') });
  });
});
