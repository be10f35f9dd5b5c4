/**
 * Installs, reads and removes the kernel pre-filter of the SPA port (Linux, root; the table is
 * prefilter-ruleset.ts, the guide docs/local.md "Kernel pre-filter").
 *
 * Contract:
 * - `choosePrefilterHook(host, interfaces)`: a wildcard host (0.0.0.0, ::) gets the inet input hook (every local
 *   delivery to the port); a host held by an interface gets netdev ingress on that interface (earliest, before
 *   the IP stack); an address no interface holds gets inet input restricted to it.
 * - `startSpaPrefilter` applies the table with `nft -f -` (atomically replacing a stale one of the same name in
 *   either family). When netdev ingress is refused (a kernel without it), it falls back to inet input once and
 *   says so through `onNote`. Errors are the nftables firewall's (`NftablesUnavailableError` without root or
 *   `nft`, `NftablesCommandError` with nft's message).
 * - `counts()` reads the named counters (`nft -j list table ...`): datagrams dropped per reason, their total, and
 *   `passed` (those handed on towards the socket).
 * - `close()` deletes the table (success when already gone); idempotent.
 */
import { networkInterfaces } from 'node:os';
import { type NftRun, nftCommand } from './nftables-command.ts';
import { NftablesCommandError } from './nftables-errors.ts';
import {
  deletePrefilterText,
  PREFILTER_COUNTERS,
  type PrefilterCounter,
  type PrefilterHook,
  type PrefilterRate,
  prefilterFamily,
  prefilterTableText,
} from './prefilter-ruleset.ts';

export type PrefilterCounts = Record<PrefilterCounter | 'passed' | 'dropped', number>;

export interface SpaPrefilter {
  readonly table: string;
  /** The hook in force (after any fallback). */
  readonly hook: PrefilterHook;
  counts(): Promise<PrefilterCounts>;
  close(): Promise<void>;
}

export interface SpaPrefilterOptions {
  readonly table: string;
  /** The SPA port the receiver is bound to (the real one, after binding port 0). */
  readonly port: number;
  /** The address the receiver is bound to. */
  readonly host: string;
  readonly rate?: Partial<PrefilterRate>;
  /** @default nftCommand() */
  readonly run?: NftRun;
  /** @default os.networkInterfaces */
  readonly interfaces?: () => ReturnType<typeof networkInterfaces>;
  readonly onNote?: (line: string) => void;
}

const APPLY_FROM_STDIN = ['-f', '-'];

/** The pre-filter's table, next to the firewall's: `<nftTable>_spa` (the name cut to fit 32 characters). */
export function prefilterTableName(nftTable: string): string {
  return `${nftTable.slice(0, 28)}_spa`;
}

export function choosePrefilterHook(
  host: string,
  interfaces: ReturnType<typeof networkInterfaces>,
): PrefilterHook {
  if (host === '0.0.0.0' || host === '::') return { kind: 'inet-input' };
  for (const [device, addresses] of Object.entries(interfaces)) {
    if (addresses?.some((entry) => entry.address === host)) {
      return { kind: 'netdev-ingress', device, address: host };
    }
  }
  return { kind: 'inet-input', address: host };
}

/** The counters of `nft -j list table` output; a counter missing from it is an error naming the table. */
export function parsePrefilterCounts(json: string, table: string): PrefilterCounts {
  const items = (JSON.parse(json) as { nftables?: unknown[] }).nftables ?? [];
  const found = new Map<string, number>();
  for (const item of items) {
    const counter = (item as { counter?: { name?: unknown; table?: unknown; packets?: unknown } }).counter;
    if (counter?.table === table && typeof counter.name === 'string' && typeof counter.packets === 'number') {
      found.set(counter.name, counter.packets);
    }
  }
  const read = (name: string) => {
    const packets = found.get(name);
    if (packets === undefined)
      throw new Error(`nftables table ${table} has no counter ${name}: was it changed by hand?`);
    return packets;
  };
  const dropped = Object.fromEntries(PREFILTER_COUNTERS.map((name) => [name, read(name)])) as Record<
    PrefilterCounter,
    number
  >;
  return {
    ...dropped,
    dropped: PREFILTER_COUNTERS.reduce((sum, name) => sum + dropped[name], 0),
    passed: read('passed'),
  };
}

export async function startSpaPrefilter(opts: SpaPrefilterOptions): Promise<SpaPrefilter> {
  const run = opts.run ?? nftCommand();
  let hook = choosePrefilterHook(opts.host, (opts.interfaces ?? networkInterfaces)());
  const apply = (h: PrefilterHook) =>
    run(
      APPLY_FROM_STDIN,
      prefilterTableText({
        table: opts.table,
        port: opts.port,
        hook: h,
        ...(opts.rate === undefined ? {} : { rate: opts.rate }),
      }),
    );
  try {
    await apply(hook);
  } catch (error) {
    if (!(error instanceof NftablesCommandError) || hook.kind !== 'netdev-ingress') throw error;
    opts.onNote?.(
      `kernel pre-filter: netdev ingress on ${hook.device} refused (${error.stderr.trim().split('\n')[0]}); using the inet input hook`,
    );
    hook = { kind: 'inet-input', address: hook.address };
    await apply(hook);
  }
  const family = prefilterFamily(hook);
  let closed: Promise<void> | undefined;
  return {
    table: opts.table,
    hook,
    async counts() {
      return parsePrefilterCounts(await run(['-j', 'list', 'table', family, opts.table]), opts.table);
    },
    close() {
      closed ??= run(APPLY_FROM_STDIN, deletePrefilterText(opts.table)).then(() => undefined);
      return closed;
    },
  };
}
