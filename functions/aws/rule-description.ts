/**
 * The description blackcloud writes on every security-group rule it opens, and its parser (used by the sweeper).
 *
 * Format (documented, stable): `blackcloud:<deviceId>:exp=<epochSeconds>`
 *   - `blackcloud:` marks the rule as ours: the sweeper never touches a rule without it.
 *   - `<deviceId>` is informational (audit); characters outside EC2's description charset are replaced by `_`
 *     and it is truncated so the whole description fits 255 characters. It may itself contain `:`.
 *   - `exp=<epochSeconds>` is when the grant ends (rounded up to the second). The sweeper revokes the rule once
 *     `now >= exp`.
 * EC2 allows in descriptions: a-z A-Z 0-9, spaces and `._-:/()#,@[]+=&;{}!$*` (up to 255 characters).
 */

export const RULE_DESCRIPTION_PREFIX = 'blackcloud:';
export const RULE_DESCRIPTION_MAX_LENGTH = 255;

const DISALLOWED = /[^a-zA-Z0-9 ._\-:/()#,@[\]+=&;{}!$*]/g;
const PARSE = /^blackcloud:(.*):exp=(\d{1,12})$/;

export interface RuleDescription {
  readonly deviceId: string;
  readonly expiresAtSeconds: number;
}

/** Epoch seconds (rounded up) of an epoch-milliseconds instant. */
export function toEpochSeconds(ms: number): number {
  return Math.ceil(ms / 1000);
}

export function formatRuleDescription(deviceId: string, expiresAtSeconds: number): string {
  const suffix = `:exp=${Math.ceil(expiresAtSeconds)}`;
  const room = RULE_DESCRIPTION_MAX_LENGTH - RULE_DESCRIPTION_PREFIX.length - suffix.length;
  const safeId = deviceId.replace(DISALLOWED, '_').slice(0, room);
  return `${RULE_DESCRIPTION_PREFIX}${safeId}${suffix}`;
}

/** The parsed description, or undefined when the rule is not one of ours (or the text is malformed). */
export function parseRuleDescription(description: string | undefined): RuleDescription | undefined {
  if (description === undefined) return undefined;
  const match = PARSE.exec(description);
  if (match === null) return undefined;
  const expiresAtSeconds = Number(match[2]);
  if (!Number.isSafeInteger(expiresAtSeconds)) return undefined;
  return { deviceId: match[1] ?? '', expiresAtSeconds };
}
