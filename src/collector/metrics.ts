/**
 * The collector's counters and timings: what `imakeep status` and the HTTP API report. Memory is
 * fixed: timings keep the last {@link SAMPLE_WINDOW} samples for percentiles plus an all-time max.
 */

/** Samples kept per timing for p50/p99. */
export const SAMPLE_WINDOW = 1024;

/** Percentiles of a timing, in ms. */
export interface TimingSummary {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

/** A bounded window of durations. */
export class Timing {
  readonly #samples = new Float64Array(SAMPLE_WINDOW);
  #count = 0;
  #max = 0;

  /** Records one duration (ms). */
  add(ms: number): void {
    this.#samples[this.#count % SAMPLE_WINDOW] = ms;
    this.#count++;
    if (ms > this.#max) this.#max = ms;
  }

  /** p50/p99 of the window, max since start. */
  summary(): TimingSummary {
    const n = Math.min(this.#count, SAMPLE_WINDOW);
    const sorted = Array.from(this.#samples.subarray(0, n)).sort((a, b) => a - b);
    const at = (q: number): number => (n === 0 ? 0 : (sorted[Math.min(n - 1, Math.floor(q * n))] ?? 0));
    return { count: this.#count, p50: round(at(0.5)), p99: round(at(0.99)), max: round(this.#max) };
  }
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;

/** A plain snapshot of {@link CollectorMetrics}. */
export interface MetricsSnapshot {
  readonly recordsStored: number;
  readonly recordsRemoved: number;
  readonly chunksCommitted: number;
  /** Bytes of records in committed chunks (the SHA-1 binary list size of what was stored). */
  readonly bytesStored: number;
  readonly checkpoints: number;
  readonly quotes: number;
  readonly cycles: number;
  readonly removals: number;
  /** Opens of a kernel write that failed with EBUSY and were retried (another reader held the list). */
  readonly busyRetries: number;
  /** Writer-lock hold time per kernel write (open to close), ms (Invariant 5). */
  readonly writerLockHoldMs: TimingSummary;
  readonly cycleMs: TimingSummary;
  /** Failures by error code since start. */
  readonly errors: Readonly<Record<string, number>>;
}

/** Mutable counters of a running collector. */
export class CollectorMetrics {
  recordsStored = 0;
  recordsRemoved = 0;
  chunksCommitted = 0;
  bytesStored = 0;
  checkpoints = 0;
  quotes = 0;
  cycles = 0;
  removals = 0;
  busyRetries = 0;
  readonly writerLockHold = new Timing();
  readonly cycle = new Timing();
  readonly #errors = new Map<string, number>();

  /** Counts a failure by its code (`code` of an ImakeepError, else the error's name). */
  error(code: string): void {
    this.#errors.set(code, (this.#errors.get(code) ?? 0) + 1);
  }

  /** A plain copy. */
  snapshot(): MetricsSnapshot {
    return {
      recordsStored: this.recordsStored,
      recordsRemoved: this.recordsRemoved,
      chunksCommitted: this.chunksCommitted,
      bytesStored: this.bytesStored,
      checkpoints: this.checkpoints,
      quotes: this.quotes,
      cycles: this.cycles,
      removals: this.removals,
      busyRetries: this.busyRetries,
      writerLockHoldMs: this.writerLockHold.summary(),
      cycleMs: this.cycle.summary(),
      errors: Object.fromEntries(this.#errors),
    };
  }
}
