/**
 * The simulated devices' connection attempts, as the device library and the device's TCP stack make them
 * (device-client/connect-device.ts; docs/scaling.md, "The fleet simulation"). A device's episode starts with a knock
 * and lasts until it ends in exactly one of: `connected`, `refusedForGood` (`retries` re-knocks spent),
 * `notRetriedAtEnd` (the next knock would come after the end of traffic).
 *
 * Contract:
 * - `start(device, storm)` begins an episode and its first attempt; false (and nothing sent) if the device is
 *   already in one (it is still trying: a scheduled reconnect has nothing to reconnect).
 * - Each attempt calls `knock(device, attempt)` and lasts `timeoutMs` from the knock. The device hears nothing back
 *   (a refusal is silent): it dials the broker at each of `dialsMs` after the knock (the library's wait after the
 *   knock, then the kernel's SYN retransmissions), and the first dial for which `admits(device)` is true (a rule
 *   for the address the connection leaves from is in place at that instant) connects: the tracked connection
 *   outlives the rule from then on. The episode then ends `connected` and `connected(device, episode)` is called
 *   (the caller reports the MQTT session a moment later). Dials after the attempt's end are not made.
 * - The caller reports the receiver's ok outcome with `attempt.granted()`: true while the attempt still has a dial
 *   to make, or after it connected (the knock's rule came in time), false after its last dial or after a failed
 *   attempt ended (an orphan rule, counted: the device does not use it, though a re-knock's dial may). An attempt that was
 *   granted but whose later dials all found no rule (closed under it) is a lost grant: counted, `lost(device)` is
 *   called, and the device goes on as after any failed attempt.
 * - A failed attempt ends at `timeoutMs`; the device knocks again `backoffMs(failed attempts)` later, unless it has
 *   made `retries` re-knocks already (refusedForGood) or that knock would be at or after `endMs` (notRetriedAtEnd).
 * Time comes from the injected clock and timers (virtual time in the simulation).
 */
import type { Clock, Timers } from '../../functions/core/interfaces.ts';

export type EpisodeEnd = 'connected' | 'refusedForGood' | 'notRetriedAtEnd';

export interface Episode {
  /** When its first knock was sent. */
  readonly at: number;
  readonly storm: boolean;
  /** Knocks sent so far. */
  readonly attempts: number;
}

export interface Attempt {
  readonly episode: Episode;
  /** The knock's rule is in place: true if this attempt was still running, false if orphaned. */
  granted(): boolean;
}

/** The device library waits 250 ms after the knock (connect-device.ts `knockWaitMs`), then dials; Linux resends a
 *  SYN that got no answer 1, 2 and 4 s later (initial RTO 1 s, doubling), all within the 10 s attempt. */
export const DEFAULT_DIALS_MS: readonly number[] = [250, 1250, 3250, 7250];

export interface DeviceAttemptsOptions {
  readonly clock: Clock;
  readonly timers: Timers;
  /** One attempt's limit from its knock, ms (the library's DEFAULT_ATTEMPT_TIMEOUT_MS). */
  readonly timeoutMs: number;
  /** When the device's connection tries the broker, ms after the knock. @default DEFAULT_DIALS_MS */
  readonly dialsMs?: readonly number[];
  /** Re-knocks per episode after failed attempts. */
  readonly retries: number;
  /** The end of traffic: no knock at or after it. */
  readonly endMs: number;
  /** Delay before the next knock after `failures` failed attempts in a row (the library's backoffDelayMs). */
  readonly backoffMs: (failures: number) => number;
  readonly knock: (device: number, attempt: Attempt) => void;
  /** Whether a connection of the device from its address now would pass the firewall. */
  readonly admits: (device: number) => boolean;
  /** The device's connection passed: its session follows. */
  readonly connected: (device: number, episode: Episode) => void;
  /** A granted attempt whose dials found no rule any more. */
  readonly lost?: (device: number) => void;
}

interface MutableEpisode {
  readonly at: number;
  readonly storm: boolean;
  attempts: number;
}

export class DeviceAttempts {
  readonly #options: DeviceAttemptsOptions;
  readonly #dialsMs: readonly number[];
  readonly #episodes = new Map<number, MutableEpisode>();
  readonly #ended: Record<EpisodeEnd, number> = { connected: 0, refusedForGood: 0, notRetriedAtEnd: 0 };
  #started = 0;
  #orphans = 0;
  #lost = 0;

  constructor(options: DeviceAttemptsOptions) {
    this.#options = options;
    this.#dialsMs = options.dialsMs ?? DEFAULT_DIALS_MS;
    if (this.#dialsMs.some((ms) => !(ms >= 0 && ms < options.timeoutMs))) {
      throw new Error(`dialsMs must lie within the attempt (0..${options.timeoutMs} ms): ${this.#dialsMs}`);
    }
  }

  start(device: number, storm: boolean): boolean {
    if (this.#episodes.has(device)) return false;
    const episode: MutableEpisode = { at: this.#options.clock.now(), storm, attempts: 0 };
    this.#episodes.set(device, episode);
    this.#started++;
    this.#attempt(device, episode);
    return true;
  }

  /** Episodes started, how they ended, those still running, orphaned rules and lost grants. */
  stats(): {
    readonly started: number;
    readonly ended: Readonly<Record<EpisodeEnd, number>>;
    readonly running: number;
    readonly orphans: number;
    readonly lost: number;
  } {
    return {
      started: this.#started,
      ended: { ...this.#ended },
      running: this.#episodes.size,
      orphans: this.#orphans,
      lost: this.#lost,
    };
  }

  #end(device: number, how: EpisodeEnd): void {
    this.#episodes.delete(device);
    this.#ended[how]++;
  }

  #attempt(device: number, episode: MutableEpisode): void {
    const { timers, clock } = this.#options;
    episode.attempts++;
    let over = false;
    let connectedNow = false;
    let granted = false;
    let dialsLeft = this.#dialsMs.length;
    const dials: unknown[] = [];
    const timeout = timers.setTimeout(() => {
      over = true;
      if (granted) {
        this.#lost++;
        this.#options.lost?.(device);
      }
      const again = this.#options.backoffMs(episode.attempts);
      if (episode.attempts > this.#options.retries) this.#end(device, 'refusedForGood');
      else if (clock.now() + again >= this.#options.endMs) this.#end(device, 'notRetriedAtEnd');
      else timers.setTimeout(() => this.#attempt(device, episode), again);
    }, this.#options.timeoutMs);
    for (const ms of this.#dialsMs) {
      dials.push(
        timers.setTimeout(() => {
          dialsLeft--;
          if (over || !this.#options.admits(device)) return;
          over = true;
          connectedNow = true;
          timers.clearTimeout(timeout);
          for (const dial of dials) timers.clearTimeout(dial);
          this.#end(device, 'connected');
          this.#options.connected(device, episode);
        }, ms),
      );
    }
    this.#options.knock(device, {
      episode,
      granted: () => {
        if (connectedNow) return true; // the device already dialled through a rule (this one or an earlier one)
        if (over || dialsLeft === 0) {
          this.#orphans++;
          return false;
        }
        granted = true;
        return true;
      },
    });
  }
}
