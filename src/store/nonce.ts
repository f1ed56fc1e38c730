/**
 * The rule that chains a boot's checkpoints (design.md "The cycle", quote step): the store
 * defines what a checkpoint is, so it defines the qualifying data each checkpoint's quote carries.
 * The collector quotes with it; a verifier recomputes it from the stored checkpoints (docs/store.md#nonce-chain).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes } from '../ima/index.js';

/** A checkpoint's quote, as the nonce chain needs it. */
export interface QuoteLink {
  readonly attest: Uint8Array;
  readonly signature: Uint8Array;
}

const NONCE_LABEL = new TextEncoder().encode('imakeep/checkpoint-nonce/v1\0');

/**
 * The qualifying data of a boot's next checkpoint quote: SHA-256(label ‖ previous attest ‖
 * previous signature), the previous checkpoint's exact TPMS_ATTEST and TPMT_SIGNATURE bytes, or
 * SHA-256(label ‖ kernel boot id) for a boot's first checkpoint (the boot id is then attested by
 * the first quote); label = `imakeep/checkpoint-nonce/v1` NUL. A checkpoint cannot be dropped
 * from or moved within the chain without the next nonce showing it. 32 bytes: the most
 * TPM2_Quote takes with a SHA-256 AK.
 */
export function chainedNonce(previous: QuoteLink | undefined, kernelBootId: string): Uint8Array {
  const tail = previous === undefined ? [new TextEncoder().encode(kernelBootId)] : [previous.attest, previous.signature];
  return sha256(concatBytes([NONCE_LABEL, ...tail]));
}
