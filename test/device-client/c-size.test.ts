/**
 * The C library's Cortex-M4 budgets (docs/device-sdk.md, "Size and memory"): runs device-client/c/size-report.sh
 * (arm-none-eabi-gcc -Os -mcpu=cortex-m4 -mthumb, Debian's gcc-arm-none-eabi, which .ci/run installs) and holds
 * its figures to the budgets stated there. A missing cross compiler fails naming the package (never a skip).
 */

import { describe, expect, it } from 'vitest';
import { C_ROOT } from '../support/c-build.ts';
import { runProcess } from '../support/run-process.ts';

/** The budgets docs/device-sdk.md states, bytes. */
const BUDGET = {
  knockFlash: 700, // the knock alone: inside the issue's 2 KB target with room to spare
  totalFlash: 2048, // the whole library: the issue's 2 KB target (1,987 B with the plain profile's credential)
  stack: 512, // every public call, library only
} as const;

const PUBLIC_CALLS = [
  'bc_knock_build',
  'bc_knock_length',
  'bc_key_offer_open',
  'bc_ack_proof',
  'bc_key_ack_build',
  'bc_connect_credential',
];

async function report(): Promise<Map<string, number>> {
  const result = await runProcess('bash', [`${C_ROOT}size-report.sh`], {
    env: { ...process.env, MBEDTLS_SRC: '' },
  });
  if (result.error !== undefined) throw result.error;
  if (result.status !== 0) throw new Error(`size-report.sh failed (${result.status}): ${result.stderr}`);
  const figures = new Map<string, number>();
  for (const line of result.stdout.split('\n')) {
    const match = /^figure (\S+) (\d+)$/.exec(line);
    if (match !== null) figures.set(match[1]!, Number(match[2]));
  }
  return figures;
}

describe('the C library on a Cortex-M4 (size-report.sh)', () => {
  it('stays within its flash, stack and RAM budgets', async () => {
    const figures = await report();
    const get = (name: string): number => {
      const value = figures.get(name);
      if (value === undefined) throw new Error(`size-report.sh printed no figure ${name}`);
      return value;
    };
    const knock = get('flash.knock');
    const offer = get('flash.offer');
    const ack = get('flash.ack');
    const credential = get('flash.credential');
    const total = get('flash.total');
    expect(knock).toBeGreaterThan(0);
    expect(knock).toBeLessThanOrEqual(BUDGET.knockFlash);
    expect(total).toBeLessThanOrEqual(BUDGET.totalFlash);
    // The groups share no code: the whole is their sum, give or take the links' alignment padding.
    expect(credential).toBeGreaterThan(0);
    expect(Math.abs(total - (knock + offer + ack + credential))).toBeLessThanOrEqual(8);
    expect(get('ram.static')).toBe(0);
    for (const call of PUBLIC_CALLS) {
      expect(get(`stack.${call}`), call).toBeGreaterThan(0);
      expect(get(`stack.${call}`), call).toBeLessThanOrEqual(BUDGET.stack);
    }
    console.log(
      `Cortex-M4 flash: knock ${knock} B, offer ${offer} B, ack ${ack} B, credential ${credential} B, total ${total} B; stack: ${PUBLIC_CALLS.map((c) => `${c} ${get(`stack.${c}`)}`).join(', ')}`,
    );
  }, 180_000);
});
