/**
 * What the server needs from the collector, as small interfaces (design.md "Layout": serve
 * depends on ima, tpm and store only, never on kernel or collector). The collector implements
 * them over its kernel reader and TPM and passes them in; tests pass in-memory implementations.
 */
import type { ImaRecord } from '../ima/index.js';

/** Records read from the kernel in one go, with the global index of the first one. */
export interface TailBatch {
  /** Global index of `records[0]` (Invariant 6: kernel position + records removed so far). */
  readonly firstIndex: number;
  /** The records as the store holds them: SHA-1 form, little-endian template data. */
  readonly records: readonly ImaRecord[];
}

/**
 * The live part of the current boot's log: records still only in the kernel (not yet in a
 * committed chunk). Every record not stored is still in the kernel, because a record leaves the
 * kernel only once stored and checkpointed (Invariant 1), so store + tail is the whole log.
 */
export interface KernelTail {
  /** Store boot number of the running kernel's list. */
  readonly boot: number;
  /** Global index one past the kernel's last record now (records removed + records in the kernel). */
  end(): Promise<number>;
  /**
   * Records from global index `from` to the kernel's end at the time of reading, in order, in
   * batches (one per kernel read). When the kernel no longer holds the next record asked for
   * (records removed meanwhile: T grew past it), the next batch must start at T, the first record
   * still in the kernel, and be yielded even if it is empty (the kernel's end): the log stream then
   * takes the removed records from the store, where a removal guarantees they are. Must never hold
   * a kernel lock between batches (Invariant 5): a slow HTTP client pauses the iteration for as
   * long as it does not read.
   */
  records(from: number): AsyncIterable<TailBatch>;
}

/** One Prometheus sample (text exposition format 0.0.4). */
export interface MetricSample {
  /** Metric name, `imakeep_` prefixed by convention. */
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge';
  readonly value: number;
  /** Label values; names and values are escaped by the formatter. */
  readonly labels?: Readonly<Record<string, string>>;
}

/** Status and metrics of the daemon around the server (the collector's cycle). */
export interface StatusSource {
  /** A JSON-serialisable snapshot, returned under `collector` by `GET /v1/status`. */
  status(): Promise<Readonly<Record<string, unknown>>>;
  /** Samples appended to `GET /metrics`. */
  metrics(): Promise<readonly MetricSample[]>;
}
