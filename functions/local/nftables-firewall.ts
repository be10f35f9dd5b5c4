/**
 * The kernel firewall (Linux, root): grants are elements of nftables sets with per-element timeouts.
 *
 * Contract:
 * - `startNftablesFirewall` (re)creates one dedicated table (`inet`, default name `blackcloud`; layout in
 *   nftables-ruleset.ts) atomically with `nft -f -`: new connections to the guarded ports are dropped (no RST,
 *   no ICMP: a SYN gets no answer at all) unless the source address, protocol and port are in the allow set;
 *   established and related traffic is accepted, so sessions outlive their grant. The input hook also sees
 *   loopback traffic: local clients need a grant too unless `exemptLoopback` is set. A stale table of the same
 *   name (a crashed run) is replaced. Nothing outside the table is touched.
 * - `allow` adds each grant's (address, guarded port) elements with `timeout` = expiresAt − now: the kernel
 *   expires them by itself. Allowing again refreshes the timeout only when the new expiry is later (the firewall
 *   keeps each element's expiry in an expiry-index.ts): a shorter grant never cuts a longer one short. Grant
 *   entries naming unguarded ports are ignored; grants already expired are skipped.
 * - `allow` and `revoke` go through one long-lived `nft -i` session (nftables-session.ts: one line per batch,
 *   one transaction, acknowledged per line; a dead nft is restarted, bounded, reported through `onSessionEvent`),
 *   so a grant costs no process. A runner without `openSession` (a test's recorder), or a session that gave up,
 *   gets one `nft -f -` per batch instead, with the same text.
 * - Prefix grants (`Grant.prefixLength`, docs/scaling.md "Prefix grants") open the whole prefix: elements such as
 *   `198.51.100.0/24 . tcp . 8883` of an interval set with per-element timeouts, one set per family and length
 *   (nftables-ruleset.ts), created with its `prefixes` rule when the length is first granted (in the same
 *   transaction as the element) and kept until the table goes. Extension, the no-shortening rule, revoke and the
 *   kernel's expiry work on them as on host elements; a host inside a granted prefix and the prefix are separate
 *   elements (revoking or expiring one keeps the other). A prefix whose address is not its network address, or
 *   whose length is outside the devices file's bounds, is refused (`NftablesInputError`).
 * - `revoke` deletes the elements (and forgets their expiries); a missing element is success.
 * - `close` ends the session, then deletes the table with `nft -f -` (success when already gone).
 * - Every value is validated before any nft text is built (`NftablesInputError`); a batch is all or nothing.
 * - Without root or without `nft`: `NftablesUnavailableError` ("nftables firewall needs root and the nft command:
 *   run as root, or use --firewall gate").
 */
import type { AccessEntry } from '../../spa/types.ts';
import type { Clock, Firewall } from '../core/interfaces.ts';
import { ExpiryIndex } from './expiry-index.ts';
import { type NftCommand, type NftRun, nftCommand } from './nftables-command.ts';
import {
  allowText,
  DEFAULT_TABLE,
  deleteTableText,
  elementKey,
  elementSet,
  grantElements,
  type NftElement,
  type PrefixSet,
  prefixLayoutText,
  prefixSetName,
  revokeText,
  tableText,
  validatePorts,
  validateTable,
} from './nftables-ruleset.ts';
import { NftablesSessionError, type NftSession, type NftSessionEvent } from './nftables-session.ts';

export { type NftCommand, type NftRun, nftCommand } from './nftables-command.ts';
export {
  NFTABLES_UNAVAILABLE_FIX,
  NftablesCommandError,
  NftablesInputError,
  NftablesUnavailableError,
} from './nftables-errors.ts';

export interface NftablesOptions {
  /** @default 'blackcloud' */
  table?: string;
  /** The broker ports guarded, e.g. [{ protocol: 'tcp', port: 8883 }]. */
  ports: readonly AccessEntry[];
  /**
   * Runs `nft` with these arguments and stdin; with `openSession` (as `nftCommand` gives) grants go through one
   * long-lived session of the same command. @default nftCommand() (the `nft` on PATH)
   */
  run?: NftRun | NftCommand;
  /** The session's restarts and its giving up (then grants fall back to one `nft -f -` per batch). */
  onSessionEvent?: (event: NftSessionEvent) => void;
  /** Used to turn `expiresAt` into element timeouts. @default Date */
  clock?: Clock;
  /**
   * Leave traffic on the loopback interface unfiltered (local processes such as an in-host controller reach the
   * broker without a grant). Off by default: then 127.0.0.1 needs a grant like any other source.
   * @default false
   */
  exemptLoopback?: boolean;
}

export interface NftablesFirewall extends Firewall {
  close(): Promise<void>;
  table: string;
}

const APPLY_FROM_STDIN = ['-f', '-'];

/** One element's identity (its set and its text); addresses come canonical from grantElements. */
function elementId(element: NftElement): string {
  return `${elementSet(element)} ${elementKey(element)}`;
}
const systemClock: Clock = { now: () => Date.now() };

export async function startNftablesFirewall(opts: NftablesOptions): Promise<NftablesFirewall> {
  const table = validateTable(opts.table ?? DEFAULT_TABLE);
  const guarded = validatePorts(opts.ports);
  const run: NftRun = opts.run ?? nftCommand();
  const clock = opts.clock ?? systemClock;

  await run(APPLY_FROM_STDIN, tableText(table, guarded, { exemptLoopback: opts.exemptLoopback === true }));
  /** Each element's expiry as last applied (the table was just created empty). */
  const expiries = new ExpiryIndex<string>();
  const session: NftSession | undefined =
    typeof (run as Partial<NftCommand>).openSession === 'function'
      ? (run as NftCommand).openSession(
          opts.onSessionEvent === undefined ? {} : { onEvent: opts.onSessionEvent },
        )
      : undefined;

  /** The prefix sets wanted (each length granted so far), and the layout version last applied without error. */
  const prefixSets = new Map<string, PrefixSet>();
  let layoutVersion = 0;
  let appliedLayout = 0;

  /**
   * `text` for `elements`, preceded by the prefix layout (every wanted set and the `prefixes` chain) when a
   * prefix set is new or an earlier layout may not have been applied; the layout is idempotent, so sending it
   * twice (concurrent batches, a resent session line) is harmless.
   */
  async function applyWithLayout(elements: readonly NftElement[], text: string): Promise<void> {
    for (const { family, prefixLength } of elements) {
      if (prefixLength === undefined) continue;
      const name = prefixSetName(family, prefixLength);
      if (prefixSets.has(name)) continue;
      prefixSets.set(name, { family, prefixLength });
      layoutVersion += 1;
    }
    const version = layoutVersion;
    const layout =
      appliedLayout < version && elements.some((e) => e.prefixLength !== undefined)
        ? prefixLayoutText(table, prefixSets.values())
        : '';
    await apply(text === '' ? '' : layout + text);
    if (layout !== '') appliedLayout = Math.max(appliedLayout, version);
  }

  /** One batch, one transaction: a line of the session, or (without one) a `nft -f -` of the same commands. */
  async function apply(text: string): Promise<void> {
    if (text === '') return;
    if (session !== undefined) {
      try {
        return await session.apply(text.trimEnd().split('\n').join('; '));
      } catch (error) {
        if (!(error instanceof NftablesSessionError)) throw error;
      }
    }
    await run(APPLY_FROM_STDIN, text);
  }

  return {
    table,
    async allow(grants) {
      const elements = grantElements(grants, guarded);
      const now = clock.now();
      expiries.expire(now);
      const latest = new Map<string, { element: NftElement; expiresAt: number }>();
      for (const { element, grant } of elements) {
        const key = elementId(element);
        const known = latest.get(key)?.expiresAt ?? expiries.get(key) ?? 0;
        if (grant.expiresAt > now && grant.expiresAt > known)
          latest.set(key, { element, expiresAt: grant.expiresAt });
      }
      const live = [...latest.values()].map(({ element, expiresAt }) => ({
        element,
        timeoutMs: expiresAt - now,
      }));
      await applyWithLayout(
        live.map(({ element }) => element),
        allowText(table, live),
      );
      for (const [key, { expiresAt }] of latest) expiries.extend(key, expiresAt);
    },
    async revoke(grants) {
      // A prefix of a length never granted has no set (and no element) to delete.
      const elements = grantElements(grants, guarded).filter(
        ({ element }) => element.prefixLength === undefined || prefixSets.has(elementSet(element)),
      );
      await applyWithLayout(
        elements.map(({ element }) => element),
        revokeText(table, elements),
      );
      for (const { element } of elements) expiries.delete(elementId(element));
    },
    async close() {
      await session?.close();
      await run(APPLY_FROM_STDIN, deleteTableText(table));
    },
  };
}
