/**
 * The few operations of an abstract-level database the store uses (abstract-level README "Public
 * API For Consumers"), as a small interface: `level`'s `Level` and `memory-level`'s `MemoryLevel`
 * opened with `keyEncoding: 'view', valueEncoding: 'view'` satisfy it, and tests wrap it to inject
 * write faults.
 */

/** One write of a batch. */
export type BatchOperation =
  | { readonly type: 'put'; readonly key: Uint8Array; readonly value: Uint8Array }
  | { readonly type: 'del'; readonly key: Uint8Array };

/** Range and direction of an iteration. */
export interface IterateOptions {
  readonly gte?: Uint8Array;
  readonly lte?: Uint8Array;
  readonly lt?: Uint8Array;
  readonly reverse?: boolean;
  readonly limit?: number;
  /**
   * Bytes of entries an iterator may read ahead of its consumer (classic-level
   * `highWaterMarkBytes`, default 16 KiB: one 64 KiB chunk per trip to LevelDB's thread).
   */
  readonly highWaterMarkBytes?: number;
}

/** An open iteration; `next()` yields one entry, undefined at the end. */
export interface DatabaseIterator {
  next(): Promise<[Uint8Array, Uint8Array] | undefined>;
  close(): Promise<void>;
}

/** The database under the store. */
export interface StoreDatabase {
  /** Opens (or reopens after `close`). Rejects with `LEVEL_DATABASE_NOT_OPEN`, the reason in `cause`. */
  open(): Promise<void>;
  close(): Promise<void>;
  get(key: Uint8Array): Promise<Uint8Array | undefined>;
  /** Atomic; with `sync: true` resolved only once on disk (classic-level: fsync of the WAL). */
  batch(operations: BatchOperation[], options: { sync: boolean }): Promise<void>;
  iterator(options: IterateOptions): DatabaseIterator;
  clear(options: { gte: Uint8Array; lt: Uint8Array }): Promise<void>;
}
