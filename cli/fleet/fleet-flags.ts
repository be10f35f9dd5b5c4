/** The flags every fleet command takes (which fleet, where its bundles go) and the operator's name in audits. */
import { hostname, userInfo } from 'node:os';

export interface FleetFlags {
  readonly dataDir?: string;
  readonly aws?: boolean;
  readonly stack?: string;
  readonly region?: string;
  /** AWS enrolment: the operator's CA directory (ca.crt, ca.key). */
  readonly ca?: string;
  /** AWS enrolment: where device bundles are written. */
  readonly out?: string;
}

export function operatorName(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (containers): keep "unknown"
  }
  return `${user}@${hostname()}`;
}
