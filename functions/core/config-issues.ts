/**
 * One zod issue as one line a person can act on: the field as a dotted path, what it must be, and the value
 * received (rendered by `describeValue`, so never more than 64 characters and never a whole key).
 * Schemas put the rule and the fix in their custom messages (`must be ...; fix: ...`); this module only locates
 * the field and appends what was received. Pure.
 */
import type { z } from 'zod';
import { describeValue } from './config-errors.ts';

export interface IssueLine {
  readonly field: string;
  readonly message: string;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let value = input;
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

function fieldName(path: readonly PropertyKey[]): string {
  let name = '';
  for (const key of path) {
    if (typeof key === 'number') name += `[${key}]`;
    else name += name === '' ? String(key) : `.${String(key)}`;
  }
  return name;
}

/** `isSecret(field)` hides the received value of key fields (a wrong key is still a key). */
export function describeIssue(
  issue: z.core.$ZodIssue,
  input: unknown,
  isSecret: (field: string) => boolean = () => false,
): IssueLine {
  if (issue.code === 'unrecognized_keys') {
    const field = fieldName([...issue.path, issue.keys[0] ?? '']);
    return { field, message: 'is not a known field; fix: remove it or check its spelling' };
  }
  const field = fieldName(issue.path);
  const value = valueAt(input, issue.path);
  const received = isSecret(field) && value !== undefined ? 'a value (hidden)' : describeValue(value);
  const message = issue.message.startsWith('Invalid input')
    ? `is invalid (${issue.message.replace(/^Invalid input: /, '')})`
    : issue.message;
  return { field, message: `${message}; received ${received}` };
}
