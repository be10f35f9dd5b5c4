/**
 * Environment variables → a typed, frozen config object, validated once at the edge (receiver start, Lambda cold
 * start). Every problem is reported at once in one AwsConfigError; each line names the variable, the value
 * received, what is expected and how to fix it. Empty strings count as unset. There are no secrets in the
 * environment (keys live in DynamoDB), so the config can be printed whole.
 */

import { z } from 'zod';
import { AWS_ENDPOINT_ENV, ENV } from '../core/environment.ts';
import { AwsConfigError } from './errors.ts';

export type Env = Readonly<Record<string, string | undefined>>;

export interface EnvVar<T> {
  readonly name: string;
  readonly schema: z.ZodType<T>;
  /** What a valid value looks like, e.g. "an integer 1..65535". */
  readonly expected: string;
  /** What to do, e.g. "set it to the nonce table's name". */
  readonly fix: string;
  /** Used when unset; without it the variable is required (unless `optional`). */
  readonly default?: T;
  readonly optional?: boolean;
}

type ValueOf<V> = V extends EnvVar<infer T> ? (V extends { optional: true } ? T | undefined : T) : never;

export type EnvConfig<S extends Record<string, EnvVar<unknown>>> = { readonly [K in keyof S]: ValueOf<S[K]> };

export function readEnv<S extends Record<string, EnvVar<unknown>>>(
  env: Env,
  spec: S,
  what: string,
): EnvConfig<S> {
  const problems: string[] = [];
  const config: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(spec)) {
    const raw = env[v.name];
    if (raw === undefined || raw.trim() === '') {
      if (v.default !== undefined) config[key] = v.default;
      else if (v.optional === true) config[key] = undefined;
      else problems.push(`${v.name} is not set: expected ${v.expected}. Fix: ${v.fix}`);
      continue;
    }
    const parsed = v.schema.safeParse(raw.trim());
    if (parsed.success) config[key] = parsed.data;
    else {
      const dflt = v.default === undefined ? '' : ` (default ${JSON.stringify(v.default)})`;
      problems.push(
        `${v.name}=${JSON.stringify(raw)} is invalid: expected ${v.expected}${dflt}. Fix: ${v.fix}`,
      );
    }
  }
  if (problems.length > 0) {
    throw new AwsConfigError(`${what} configuration is invalid:\n  - ${problems.join('\n  - ')}`);
  }
  return Object.freeze(config) as EnvConfig<S>;
}

// Schemas for the values blackcloud reads (strings in, typed values out).

const integer = (min: number, max: number) =>
  z.string().regex(/^\d+$/).transform(Number).pipe(z.number().int().min(min).max(max));

export const portSchema = integer(1, 65_535);
export const secondsSchema = (min: number, max: number) => integer(min, max);
export const tableNameSchema = z.string().regex(/^[a-zA-Z0-9_.-]{3,255}$/);
export const thingGroupSchema = z.string().regex(/^[a-zA-Z0-9:_-]{1,128}$/);
export const regionSchema = z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/);
export const urlSchema = z.string().regex(/^https?:\/\/[^\s/]+(\/\S*)?$/);
export const securityGroupIdsSchema = z
  .string()
  .transform((s) => [
    ...new Set(
      s
        .split(',')
        .map((p) => p.trim())
        .filter((p) => p !== ''),
    ),
  ])
  .pipe(
    z
      .array(z.string().regex(/^sg-[0-9a-f]{8}([0-9a-f]{9})?$/))
      .min(1)
      .max(16),
  );

/** The variables both Lambdas and the receiver read. */
export const commonAwsVars = {
  region: {
    name: ENV.region,
    schema: regionSchema,
    expected: 'an AWS Region name such as "eu-west-1"',
    fix: 'set AWS_REGION (Lambda sets it by itself; the receiver unit file sets it)',
  },
  endpoint: {
    name: AWS_ENDPOINT_ENV,
    schema: urlSchema,
    expected: 'an http(s) URL such as "http://127.0.0.1:5000"',
    fix: 'unset it in production; tests point it at moto server',
    optional: true,
  },
  brokerSecurityGroupIds: {
    name: ENV.brokerSecurityGroupIds,
    schema: securityGroupIdsSchema,
    expected:
      'comma-separated security group ids such as "sg-0123456789abcdef0,sg-0fedcba9876543210" (1..16)',
    fix: "set it to the broker's security group ids (stack output), in fill order",
  },
  grantsTable: {
    name: ENV.grantsTable,
    schema: tableNameSchema,
    expected: 'a DynamoDB table name (3..255 of a-z A-Z 0-9 _ . -)',
    fix: "set it to the grants table's name (stack output)",
  },
} as const satisfies Record<string, EnvVar<unknown>>;
