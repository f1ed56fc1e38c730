/**
 * The rules that order checkpoints in time without a verifier online (docs/store.md#nonce-chain):
 *
 * - Nonce chaining, per boot (the store's rule, `src/store/nonce.ts`): a boot's first
 *   checkpoint is quoted with qualifying data SHA-256(label ‖ kernel boot id), each later one with
 *   SHA-256(label ‖ attest_{i-1} ‖ signature_{i-1}), the previous checkpoint's exact TPMS_ATTEST
 *   and TPMT_SIGNATURE bytes; label = `imakeep/checkpoint-nonce/v1` NUL. A checkpoint cannot be
 *   dropped from or moved within the chain without the next nonce showing it, and the boot id is
 *   attested by the first quote.
 * - TPM clock order (Keylime `check_quote_timing`, `keylime/tpm/tpm_main.py`): resetCount never decreases;
 *   with the same resetCount, restartCount never decreases; the clock strictly increases; and
 *   `safe` is set (the clock was not rolled back by an unorderly shutdown, Part 1 §36.6).
 */
import type { ClockInfo } from '../tpm/index.js';

export { chainedNonce, type QuoteLink } from '../store/index.js';

/** Why `next` cannot follow `previous` in time, or null if it can. */
export function clockOrderViolation(previous: ClockInfo, next: ClockInfo): string | null {
  if (!next.safe) return 'the TPM clock is not safe (it may have been rolled back)';
  if (next.resetCount < previous.resetCount) return `resetCount went back from ${previous.resetCount} to ${next.resetCount}`;
  if (next.resetCount === previous.resetCount && next.restartCount < previous.restartCount) {
    return `restartCount went back from ${previous.restartCount} to ${next.restartCount} within reset ${next.resetCount}`;
  }
  if (next.clock <= previous.clock) return `clock did not advance: ${previous.clock} then ${next.clock}`;
  return null;
}
