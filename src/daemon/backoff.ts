/**
 * How the daemon's fleet sync waits while the fleet is down. Apart from `fleet-sync.ts` so that
 * `imakeep run` without `--fleet` loads none of the fleet client (src/daemon/daemon.ts `fleetSync`).
 */

/** Bounds of the retry delay while the fleet is down. */
export interface Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
}

/** Default: 1 s doubling to 5 min. */
export const DEFAULT_BACKOFF: Backoff = { initialMs: 1000, maxMs: 300_000 };

/**
 * The delay before retry `attempt` (0-based): exponential up to `maxMs`, scaled by a uniform
 * factor in [0.5, 1) so devices cut off together do not return together ("equal jitter").
 */
export function backoffDelay(attempt: number, backoff: Backoff, random: () => number): number {
  const ceiling = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling * (0.5 + random() / 2));
}
