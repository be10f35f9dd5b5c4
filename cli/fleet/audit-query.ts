/**
 * The audit trail as the operator reads it (`blackcloud audit`), pure: `--since` parsing, record parsing and
 * filtering, and the one-line table rendering. Local records come from audit.jsonl, AWS records from the audit
 * log group (lines `{"kind":"audit", ...event}`); operator actions are records of type `device.*`.
 *
 * Contract:
 * - `parseSince("90s" | "15m" | "1h" | "2d" | ISO 8601, now)` → epoch ms; anything else → UsageError naming the
 *   flag, the value and the accepted forms.
 * - `parseAuditLine` → the record, or undefined for lines that are not audit records (metrics, messages, junk):
 *   reading never fails on a bad line.
 * - `matchesQuery` keeps records at/after `since` that concern `deviceId` (when given).
 */
import { UsageError } from '../usage-error.ts';
import type { AuditQuery, AuditRecord } from './fleet.ts';

const UNIT_MS: Readonly<Record<string, number>> = Object.freeze({
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
});

export function parseSince(text: string, now: number): number {
  const relative = /^([1-9][0-9]{0,6})(s|m|h|d)$/.exec(text);
  if (relative !== null) return now - Number(relative[1]) * UNIT_MS[relative[2]!]!;
  if (/^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(text)) {
    const at = Date.parse(text);
    if (Number.isFinite(at)) return at;
  }
  throw new UsageError(
    '--since',
    `must be a duration like 90s, 15m, 1h, 2d or an ISO 8601 time like 2026-11-30T12:00:00Z; received ${JSON.stringify(text)}`,
  );
}

export function parseAuditLine(line: string): AuditRecord | undefined {
  const trimmed = line.trim();
  if (!trimmed.startsWith('{')) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const record = value as Record<string, unknown>;
  if (record.kind !== undefined && record.kind !== 'audit') return undefined;
  if (typeof record.type !== 'string' || typeof record.time !== 'number') return undefined;
  const { kind: _kind, isoTime: _iso, ...rest } = record;
  return rest as AuditRecord;
}

export function matchesQuery(record: AuditRecord, query: Pick<AuditQuery, 'since' | 'deviceId'>): boolean {
  if (query.since !== undefined && record.time < query.since) return false;
  if (query.deviceId !== undefined && record.deviceId !== query.deviceId) return false;
  return true;
}

function accessText(value: unknown): string {
  if (!Array.isArray(value)) return '';
  return value
    .map((entry) =>
      typeof entry === 'string'
        ? entry
        : `${String((entry as { protocol?: unknown }).protocol)}/${String((entry as { port?: unknown }).port)}`,
    )
    .join(',');
}

function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}

/** What happened, beyond who and where: reason, access and expiry, operator details. */
export function auditDetail(record: AuditRecord): string {
  const r = record as Record<string, unknown>;
  switch (record.type) {
    case 'packet.accepted':
      return `${String(r.format)} ${accessText(r.access)} for ${String(r.grantSeconds)} s`;
    case 'packet.rejected':
      return `${String(r.reason)}${r.detail === undefined ? '' : ` (${String(r.detail)})`}`;
    case 'grant.opened':
    case 'grant.extended':
      return `${accessText(r.access)} until ${typeof r.expiresAt === 'number' ? isoTime(r.expiresAt) : '?'}`;
    case 'grant.revoked':
      return `${accessText(r.access)}${typeof r.reason === 'string' ? `, ${r.reason}` : ''}`;
    case 'grant.failed':
      return String(r.error);
    default: {
      const parts: string[] = [];
      if (typeof r.operator === 'string') parts.push(`by ${r.operator}`);
      if (typeof r.revokedGrants === 'number') parts.push(`${r.revokedGrants} grant(s) revoked`);
      if (typeof r.disconnected === 'number') parts.push(`${r.disconnected} session(s) closed`);
      return parts.join(', ');
    }
  }
}

export const AUDIT_TABLE_HEADER = ['TIME', 'EVENT', 'DEVICE', 'SOURCE', 'DETAIL'] as const;

/** Columns of one table row. */
export function auditRow(record: AuditRecord): string[] {
  const r = record as Record<string, unknown>;
  return [
    isoTime(record.time),
    record.type,
    typeof r.deviceId === 'string' ? r.deviceId : '-',
    typeof r.source === 'string' ? r.source : '-',
    auditDetail(record),
  ];
}

/** Pads columns to fixed widths (the last column is free). */
export function formatRow(columns: readonly string[], widths: readonly number[]): string {
  return columns
    .map((column, i) => (i === columns.length - 1 ? column : column.padEnd(widths[i] ?? 0)))
    .join('  ')
    .trimEnd();
}

export const AUDIT_COLUMN_WIDTHS = [24, 16, 20, 16, 0] as const;
