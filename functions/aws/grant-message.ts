/**
 * The grant as JSON: the body of the delayed SQS message the revoker consumes (version 1).
 *   {"v":1,"deviceId":"dev-1","address":"203.0.113.7","family":4,"access":[{"protocol":"tcp","port":8883}],
 *    "openedAt":1700000000000,"expiresAt":1700000030000}
 * A prefix grant (functions/core/grant-prefix.ts) adds "prefixLength":24 (absent for a host grant).
 * Times are epoch milliseconds. Parsing validates every field (zod) and throws GrantRecordError naming them.
 */
import { z } from 'zod';
import type { Grant } from '../core/interfaces.ts';
import { GrantRecordError } from './errors.ts';

export const GRANT_MESSAGE_VERSION = 1;

const accessEntry = z.object({
  protocol: z.enum(['tcp', 'udp']),
  port: z.number().int().min(1).max(65_535),
});

const epochMs = z.number().int().nonnegative();

const grantMessage = z.object({
  v: z.literal(GRANT_MESSAGE_VERSION),
  deviceId: z.string().min(1).max(256),
  address: z.string().min(2).max(64),
  family: z.union([z.literal(4), z.literal(6)]),
  prefixLength: z.number().int().min(1).max(128).optional(),
  access: z.array(accessEntry).min(1).max(16),
  openedAt: epochMs,
  expiresAt: epochMs,
});

export function encodeGrantMessage(grant: Grant): string {
  return JSON.stringify({
    v: GRANT_MESSAGE_VERSION,
    deviceId: grant.deviceId,
    address: grant.address,
    family: grant.family,
    ...(grant.prefixLength === undefined ? {} : { prefixLength: grant.prefixLength }),
    access: grant.access.map((a) => ({ protocol: a.protocol, port: a.port })),
    openedAt: grant.openedAt,
    expiresAt: grant.expiresAt,
  });
}

export function decodeGrantMessage(body: string): Grant {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (error) {
    throw new GrantRecordError(
      `grant message is not JSON (${body.slice(0, 64)}...): it must come from encodeGrantMessage`,
      {
        cause: error,
      },
    );
  }
  const parsed = grantMessage.safeParse(json);
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new GrantRecordError(
      `grant message is invalid (${fields}): it must come from encodeGrantMessage (v1)`,
    );
  }
  const { v: _v, prefixLength, ...grant } = parsed.data;
  return prefixLength === undefined ? grant : { ...grant, prefixLength };
}
