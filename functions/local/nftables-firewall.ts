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
 *   expires them by itself. Allowing again replaces the timeout (the latest allow wins). Grant entries naming
 *   unguarded ports are ignored; grants already expired are skipped.
 * - `allow` and `revoke` go through one long-lived `nft -i` session (nftables-session.ts: one line per batch,
 *   one transaction, acknowledged per line; a dead nft is restarted, bounded, reported through `onSessionEvent`),
 *   so a grant costs no process. A runner without `openSession` (a test's recorder), or a session that gave up,
 *   gets one `nft -f -` per batch instead, with the same text.
 * - `revoke` deletes the elements; a missing element is success.
 * - `close` ends the session, then deletes the table with `nft -f -` (success when already gone).
 * - Every value is validated before any nft text is built (`NftablesInputError`); a batch is all or nothing.
 * - Without root or without `nft`: `NftablesUnavailableError` ("nftables firewall needs root and the nft command:
 *   run as root, or use --firewall gate").
 */
import type { AccessEntry } from '../../spa/types.ts';
import type { Clock, Firewall } from '../core/interfaces.ts';
import { type NftCommand, type NftRun, nftCommand } from './nftables-command.ts';
import {
  allowText,
  DEFAULT_TABLE,
  deleteTableText,
  grantElements,
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
const systemClock: Clock = { now: () => Date.now() };

export async function startNftablesFirewall(opts: NftablesOptions): Promise<NftablesFirewall> {
  const table = validateTable(opts.table ?? DEFAULT_TABLE);
  const guarded = validatePorts(opts.ports);
  const run: NftRun = opts.run ?? nftCommand();
  const clock = opts.clock ?? systemClock;

  await run(APPLY_FROM_STDIN, tableText(table, guarded, { exemptLoopback: opts.exemptLoopback === true }));
  const session: NftSession | undefined =
    typeof (run as Partial<NftCommand>).openSession === 'function'
      ? (run as NftCommand).openSession(
          opts.onSessionEvent === undefined ? {} : { onEvent: opts.onSessionEvent },
        )
      : undefined;

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
      const live = elements
        .map(({ element, grant }) => ({ element, timeoutMs: grant.expiresAt - now }))
        .filter((item) => item.timeoutMs > 0);
      await apply(allowText(table, live));
    },
    async revoke(grants) {
      await apply(revokeText(table, grantElements(grants, guarded)));
    },
    async close() {
      await session?.close();
      await run(APPLY_FROM_STDIN, deleteTableText(table));
    },
  };
}
