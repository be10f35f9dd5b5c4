/**
 * The receiver killed (SIGKILL) while an nftables grant is open, in a private network namespace: nothing revokes
 * the element, the kernel expires it at its timeout (the grant lasts 2 s: real time, the kernel's clock cannot be
 * faked), and the table stays in place, so the broker port stays dark afterwards (fail closed).
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { encodeBc1 } from '../../spa/bc1.ts';
import { PROJECT_ROOT } from '../functions/local/helpers.ts';
import { makeTempDir, NetworkNamespace, requireTools } from '../support/fwknop-tools.ts';

const GUARDED_PORT = 8883;
let ns: NetworkNamespace;
let dir: string;
let child: ChildProcessWithoutNullStreams | undefined;

beforeAll(async () => {
  const { ip } = (await requireTools('ip')) as { ip: string };
  ns = await NetworkNamespace.create(ip, '8kill');
  dir = await makeTempDir('bc8-nft-kill');
});
afterAll(async () => {
  child?.kill('SIGKILL');
  await ns?.remove(); // deleting the namespace deletes its nftables tables too
  await rm(dir, { recursive: true, force: true });
});

describe('the receiver killed with SIGKILL while an nftables grant is open', () => {
  it('the element expires by itself in the kernel; the table (drop rule) stays: nothing is left open', async () => {
    const table = `bc8kill${randomBytes(3).toString('hex')}`;
    const key = randomBytes(32);
    const keyFile = join(dir, 'key.json');
    await writeFile(keyFile, JSON.stringify({ keyId: 88, key: key.toString('base64') }), { mode: 0o600 });
    const spawned = spawn(
      ns.ip,
      [
        'netns',
        'exec',
        ns.name,
        process.execPath,
        'test/hostile/support/nft-receiver-child.ts',
        keyFile,
        table,
        String(GUARDED_PORT),
      ],
      { cwd: PROJECT_ROOT },
    );
    child = spawned;
    let stderr = '';
    spawned.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const lines: Record<string, unknown>[] = [];
    createInterface({ input: spawned.stdout }).on('line', (line) =>
      lines.push(JSON.parse(line) as Record<string, unknown>),
    );
    const port = await vi.waitFor(
      () => {
        if (spawned.exitCode !== null) throw new Error(`receiver exited: ${stderr}`);
        const found = lines.find((line) => typeof line.port === 'number');
        expect(found, stderr).toBeDefined();
        return found!.port as number;
      },
      { timeout: 30_000, interval: 50 },
    );
    const allowSet = () => ns.exec('nft', ['list', 'set', 'inet', table, 'allow4']);

    const knock = encodeBc1(
      { timestampMs: Date.now(), durationSeconds: 2, access: [{ protocol: 'tcp', port: GUARDED_PORT }] },
      { keyId: 88, key: new Uint8Array(key), nonce: randomBytes(12) },
    );
    await ns.sendUdp(port, knock);
    await vi.waitFor(() => expect(lines.some((line) => line.granted === '127.0.0.1')).toBe(true), {
      timeout: 10_000,
      interval: 20,
    });
    const exited = new Promise((resolve) => spawned.once('exit', (_code, signal) => resolve(signal)));
    spawned.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    child = undefined;

    // Nobody revoked it: the element is still there right after the kill...
    expect(await allowSet()).toContain(`127.0.0.1 . tcp . ${GUARDED_PORT}`);
    // ...and the kernel removes it at its timeout (2 s), with no process left to do anything.
    await vi.waitFor(async () => expect(await allowSet()).not.toContain('127.0.0.1'), {
      timeout: 10_000,
      interval: 100,
    });
    // The table and its drop rule outlive the process: the port stays closed to new connections.
    const ruleset = await ns.exec('nft', ['list', 'table', 'inet', table]);
    expect(ruleset).toMatch(new RegExp(`meta l4proto \\. th dport \\{ tcp \\. ${GUARDED_PORT} \\} drop`));
  }, 60_000);
});
