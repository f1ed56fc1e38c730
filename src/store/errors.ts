/**
 * Typed store failures. Every code is stable (README "Errors"); the data a caller needs to act
 * rides on the error (boot, key, indexes, versions), the LevelDB error stays in `cause`.
 */
import { DetailedError } from '../errors.js';

/** Stable codes of {@link StoreError}. */
export type StoreErrorCode =
  /** Another process (or another open in this one) holds the LevelDB lock; `cause.code` is `LEVEL_LOCKED`. */
  | 'STORE_LOCKED'
  /** The store was written by a newer schema version than this code reads. */
  | 'STORE_VERSION'
  /** A stored value does not decode or does not have the shape of its key's type. */
  | 'STORE_CORRUPT'
  /**
   * A write (or the reopen after a failed one) did not reach disk: ENOSPC, EIO... Nothing changed.
   * While the reopen fails, reads throw it too (each retries the reopen).
   */
  | 'STORE_WRITE_FAILED'
  /** The boot segment asked for does not exist. */
  | 'STORE_NOT_FOUND'
  /** `dropBoot` refused: not exported and acknowledged, too young, or the current boot. */
  | 'STORE_RETENTION_REFUSED'
  /** A chunk would leave a gap, overlap, or not chain to the stored previous chunk. */
  | 'STORE_CHAIN_BROKEN'
  /** A journal write out of order: an intent while one is pending, an outcome without one, a T mismatch. */
  | 'STORE_JOURNAL_CONFLICT'
  /** A removal intent would remove records not yet stored or not covered by a stored checkpoint (Invariant 1). */
  | 'STORE_REMOVAL_UNCOVERED'
  /**
   * The store's device id cannot become the one asked for: it holds another, or its checkpoints
   * were quoted with nonces that bound none (`nonce.ts` `adoptDeviceId`).
   */
  | 'STORE_DEVICE_ID';

/** Data attached to a store error, all optional: what was being read or written when it failed. */
export interface StoreErrorDetails {
  /** Store boot sequence number the operation was about. */
  readonly boot?: number;
  /** Printable form of the LevelDB key involved (see `keys.ts` `formatKey`). */
  readonly key?: string;
  /** Global record index the caller asked for or the store expected. */
  readonly expectedIndex?: number;
  /** Global record index the caller supplied. */
  readonly actualIndex?: number;
  /** Schema version found on disk (STORE_VERSION). */
  readonly foundVersion?: number;
  /** Highest schema version this code reads (STORE_VERSION). */
  readonly supportedVersion?: number;
}

/** The one error class of `src/store`; switch on `code`. */
export class StoreError extends DetailedError<StoreErrorCode, StoreErrorDetails> {}
