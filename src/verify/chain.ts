/**
 * The rules that order checkpoints in time without a verifier online (peers.md §5.6):
 *
 * - Nonce chaining, per boot (the collector's rule, `src/collector/quote.ts`): a boot's first
 *   checkpoint is quoted with qualifying data SHA-256(label ‖ kernel boot id), each later one with
 *   SHA-256(label ‖ attest_{i-1} ‖ signature_{i-1}), the previous checkpoint's exact TPMS_ATTEST
 *   and TPMT_SIGNATURE bytes; label = `imakeep/checkpoint-nonce/v1` NUL. A checkpoint cannot be
 *   dropped from or moved within the chain without the next nonce showing it, and the boot id is
 *   attested by the first quote.
 * - TPM clock order (Keylime `check_quote_timing`, peers.md §1.3): resetCount never decreases;
 *   with the same resetCount, restartCount never decreases; the clock strictly increases; and
 *   `safe` is set (the clock was not rolled back by an unorderly shutdown, Part 1 §36.6).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes } from '../ima/index.js';
import type { ClockInfo } from '../tpm/index.js';

/** A checkpoint's quote, as the nonce chain needs it. */
export interface QuoteLink {
  readonly attest: Uint8Array;
  readonly signature: Uint8Array;
}

const NONCE_LABEL = new TextEncoder().encode('imakeep/checkpoint-nonce/v1\0');

/**
 * The nonce a checkpoint must be quoted with: chained from `previous` (the boot's checkpoint
 * before it), or from the kernel boot id for the boot's first checkpoint.
 */
export function chainedNonce(previous: QuoteLink | undefined, kernelBootId: string): Uint8Array {
  const tail = previous === undefined ? [new TextEncoder().encode(kernelBootId)] : [previous.attest, previous.signature];
  return sha256(concatBytes([NONCE_LABEL, ...tail]));
}

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
