/** CleanupStack (cleanup-stack.ts): reverse order, every step despite failures, late steps closed at once. */
import { describe, expect, it } from 'vitest';
import { CleanupStack } from '../../../functions/local/cleanup-stack.ts';

describe('CleanupStack', () => {
  it('runs the steps last first, each despite an earlier failure, and rejects with the first failure', async () => {
    const stack = new CleanupStack();
    const ran: string[] = [];
    stack.defer(() => ran.push('a'));
    stack.defer(() => {
      ran.push('b');
      throw new Error('b failed');
    });
    stack.defer(async () => {
      ran.push('c');
      throw new Error('c failed');
    });
    expect(stack.closing).toBe(false);
    const first = stack.close();
    expect(stack.closing).toBe(true);
    await expect(first).rejects.toThrow('c failed');
    expect(ran).toEqual(['c', 'b', 'a']);
    await expect(stack.close()).rejects.toThrow('c failed');
    expect(ran).toEqual(['c', 'b', 'a']);
  });

  it('a step deferred while closing runs next; one deferred after the close runs at once', async () => {
    const stack = new CleanupStack();
    const ran: string[] = [];
    let release: () => void = () => undefined;
    stack.defer(() => ran.push('first'));
    stack.defer(() => new Promise<void>((done) => (release = done)).then(() => ran.push('slow')));
    const closing = stack.close();
    stack.defer(() => ran.push('late-while-closing'));
    release();
    await closing;
    expect(ran).toEqual(['slow', 'late-while-closing', 'first']);
    stack.defer(() => ran.push('after'));
    await stack.close();
    expect(ran).toEqual(['slow', 'late-while-closing', 'first', 'after']);
  });
});
