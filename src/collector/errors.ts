/**
 * Errors of the collector (design.md "The cycle", "Recovery"). Every code is stable (README
 * "Errors"); the data needed to act ride on `details`.
 */
import { DetailedError } from '../errors.js';
import type { BankName } from '../ima/index.js';
import type { RecoveryPauseReason } from './recovery.js';

/** Stable codes of {@link CollectorError}. */
export type CollectorErrorCode =
  /**
   * The quote's PCR values equal the replay of no prefix of the stored records from the last
   * checkpoint on, although every record the kernel logged before the quote is stored: the log
   * and the TPM disagree (a PCR extended outside IMA, a corrupted record). Nothing is removed;
   * `details` names the bank, the quoted and the replayed value and the records replayed.
   */
  | 'QUOTE_MISMATCH'
  /**
   * A journaled removal (intent without outcome) could not be decided: the kernel's head matches
   * neither "removed" nor "not removed", or both and the PCR replay does not tell them apart
   * (`details.reason`, recovery.ts `RecoveryPauseReason`). The collector does not guess
   * (Invariant 3): it keeps running and serving the stored log with removal paused, retries every
   * cycle, and says why in its status; a path that would serve the kernel's records refuses.
   */
  | 'COLLECTOR_RECOVERY_FAILED'
  /** The collector was stopped (`stop()`, SIGINT/SIGTERM) or closed while a call was waiting. */
  | 'COLLECTOR_STOPPED'
  /**
   * The head of the kernel's list is not the stored record at T: something other than this
   * collector removed or staged records. Nothing is removed.
   */
  | 'COLLECTOR_KERNEL_DIVERGED';

/** Data attached to a {@link CollectorError}; all optional. */
export interface CollectorErrorDetails {
  readonly boot?: number;
  /** Global record index the error is about. */
  readonly index?: number;
  /** QUOTE_MISMATCH: the bank and PCR compared first, the quoted and the replayed value (hex). */
  readonly bank?: BankName;
  readonly pcr?: number;
  readonly quoted?: string;
  readonly replayed?: string;
  /** QUOTE_MISMATCH: records replayed, from the last checkpoint to the stored count. */
  readonly from?: number;
  readonly to?: number;
  /** COLLECTOR_RECOVERY_FAILED: why the pending removal is undecided. */
  readonly reason?: RecoveryPauseReason;
}

/** The one error class of `src/collector`; switch on `code`. */
export class CollectorError extends DetailedError<CollectorErrorCode, CollectorErrorDetails> {}
