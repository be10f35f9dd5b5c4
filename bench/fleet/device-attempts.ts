/**
 * The simulated devices' connection attempts, as the device library makes them (device-client/connect-device.ts;
 * docs/scaling.md, "The fleet simulation"). A device's episode starts with a knock and lasts until it ends in
 * exactly one of: `connected`, `lost` (its connect found no rule), `refusedForGood` (`retries` re-knocks spent),
 * `notRetriedAtEnd` (the next knock would come after the end of traffic).
 *
 * Contract:
 * - `start(device, storm)` begins an episode and its first attempt; false (and nothing sent) if the device is
 *   already in one (it is still trying: a scheduled reconnect has nothing to reconnect).
 * - Each attempt calls `knock(device, attempt)` and lasts `timeoutMs` from the knock. The caller reports the
 *   rule (the receiver's ok outcome) with `attempt.ruleInPlace()`: true if the attempt was still running (the
 *   device now connects; the caller reports `end(device, 'connected' | 'lost')`), false if it had ended (an
 *   orphan, counted: the device does not use it). A refusal is silent, as for a real device: it is not reported.
 * - An attempt without its rule fails at its end; the device knocks again `backoffMs(failed attempts)` later,
 *   unless it has made `retries` re-knocks already (refusedForGood) or that knock would be at or after `endMs`
 *   (notRetriedAtEnd).
 * Time comes from the injected clock and timers (virtual time in the simulation).
 */
import type { Clock, Timers } from '../../functions/core/interfaces.ts';

export type EpisodeEnd = 'connected' | 'lost' | 'refusedForGood' | 'notRetriedAtEnd';

export interface Episode {
  /** When its first knock was sent. */
  readonly at: number;
  readonly storm: boolean;
  /** Knocks sent so far. */
  readonly attempts: number;
}

export interface Attempt {
  readonly episode: Episode;
  /** The rule is in place: true if this attempt was still running (the device connects), false if orphaned. */
  ruleInPlace(): boolean;
}

export interface DeviceAttemptsOptions {
  readonly clock: Clock;
  readonly timers: Timers;
  /** One attempt's limit from its knock, ms (the library's DEFAULT_ATTEMPT_TIMEOUT_MS). */
  readonly timeoutMs: number;
  /** Re-knocks per episode after failed attempts. */
  readonly retries: number;
  /** The end of traffic: no knock at or after it. */
  readonly endMs: number;
  /** Delay before the next knock after `failures` failed attempts in a row (the library's backoffDelayMs). */
  readonly backoffMs: (failures: number) => number;
  readonly knock: (device: number, attempt: Attempt) => void;
}

interface MutableEpisode {
  readonly at: number;
  readonly storm: boolean;
  attempts: number;
}

export class DeviceAttempts {
  readonly #options: DeviceAttemptsOptions;
  readonly #episodes = new Map<number, MutableEpisode>();
  readonly #ended: Record<EpisodeEnd, number> = {
    connected: 0,
    lost: 0,
    refusedForGood: 0,
    notRetriedAtEnd: 0,
  };
  #started = 0;
  #orphans = 0;

  constructor(options: DeviceAttemptsOptions) {
    this.#options = options;
  }

  start(device: number, storm: boolean): boolean {
    if (this.#episodes.has(device)) return false;
    const episode: MutableEpisode = { at: this.#options.clock.now(), storm, attempts: 0 };
    this.#episodes.set(device, episode);
    this.#started++;
    this.#attempt(device, episode);
    return true;
  }

  /** The episode of `device` ends (after its connect: 'connected' or 'lost'). */
  end(device: number, how: EpisodeEnd): void {
    if (!this.#episodes.delete(device)) throw new Error(`device ${device} has no episode to end (${how})`);
    this.#ended[how]++;
  }

  /** Episodes started, how they ended, those still running, and the orphaned rules. */
  stats(): {
    readonly started: number;
    readonly ended: Readonly<Record<EpisodeEnd, number>>;
    readonly running: number;
    readonly orphans: number;
  } {
    return {
      started: this.#started,
      ended: { ...this.#ended },
      running: this.#episodes.size,
      orphans: this.#orphans,
    };
  }

  #attempt(device: number, episode: MutableEpisode): void {
    const { timers, clock } = this.#options;
    episode.attempts++;
    let over = false;
    const timeout = timers.setTimeout(() => {
      over = true;
      const again = this.#options.backoffMs(episode.attempts);
      if (episode.attempts > this.#options.retries) this.end(device, 'refusedForGood');
      else if (clock.now() + again >= this.#options.endMs) this.end(device, 'notRetriedAtEnd');
      else timers.setTimeout(() => this.#attempt(device, episode), again);
    }, this.#options.timeoutMs);
    this.#options.knock(device, {
      episode,
      ruleInPlace: () => {
        if (over) {
          this.#orphans++;
          return false;
        }
        over = true;
        timers.clearTimeout(timeout);
        return true;
      },
    });
  }
}
