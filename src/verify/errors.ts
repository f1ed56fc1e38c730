/**
 * The first failure an offline verification finds, named precisely: which check, which boot,
 * which record or checkpoint, what was expected and what was found.
 */
import { DetailedError } from '../errors.js';

/** Stable codes of {@link VerifyError}. */
export type VerifyErrorCode =
  /** A checkpoint's quote does not verify with the AK (signature, PCR digest, layout); `details.quoteCode` says which. */
  | 'VERIFY_SIGNATURE'
  /** No trusted AK (and no trust on first use), the bundle's AK is not the trusted one, or a checkpoint names another AK. */
  | 'VERIFY_AK'
  /** The bundle states another device id than the one the verifier holds it to (its enrollment's). */
  | 'VERIFY_DEVICE_MISMATCH'
  /** A checkpoint's nonce is not the store's rule over the boot, its anchor and the previous checkpoint (`store/nonce.ts`). */
  | 'VERIFY_NONCE_CHAIN'
  /** Records bound by no checked nonce, or (strict) checkpoints quoted with the version-1 nonce. */
  | 'VERIFY_UNSIGNED'
  /** TPM clock, resetCount or restartCount went backwards between checkpoints, or the clock was not safe. */
  | 'VERIFY_CLOCK_ORDER'
  /** Replayed PCR values differ from a checkpoint's or a chunk's stored state, or a record's digest is wrong. */
  | 'VERIFY_REPLAY'
  /** Chunks or bundles do not follow each other: a hash link, an index, a cursor or a boot is out of place. */
  | 'VERIFY_CHAIN_GAP'
  /** The bundle, or a chunk or checkpoint in it, does not decode. */
  | 'VERIFY_BUNDLE_CORRUPT'
  /** An EAR token (a fleet's acknowledgement) does not parse, is not signed by the fleet key, or lacks the verified state. */
  | 'VERIFY_TOKEN';

/** Where a verification failed and what differed. */
export interface VerifyErrorDetails {
  /** The check that failed, e.g. `checkpoint-replay`, `chunk-link`, `quote-signature`. */
  readonly check: string;
  /** Store boot number. */
  readonly boot?: number;
  /** Global index of the record concerned. */
  readonly index?: number;
  /** Record count the checkpoint concerned covers (its key). */
  readonly checkpoint?: number;
  /** First index of the chunk concerned. */
  readonly chunk?: number;
  /** Expected value (hex for bytes). */
  readonly expected?: string;
  /** Value found. */
  readonly got?: string;
  /** Code of the underlying error (QUOTE_*, IMA_*, STORE_*), when one caused this. */
  readonly causeCode?: string;
}

/** The one error class of `src/verify`. */
export class VerifyError extends DetailedError<VerifyErrorCode, VerifyErrorDetails> {}
