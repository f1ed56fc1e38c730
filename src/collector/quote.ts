/**
 * Where checkpoints' quotes come from. The collector talks to the TPM only through
 * {@link QuoteSource}: production wraps a `Tpm` ({@link TpmQuoteSource}), tests wrap that to inject
 * faults (a PCR extended behind IMA's back, a TPM that fails). The caller owns and closes the TPM.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesEqual, concatBytes, type BankName } from '../ima/index.js';
import {
  Quote,
  computePcrDigest,
  parseQuoteAttest,
  parseSignature,
  publicKeyFromTpm2b,
  selectionOf,
  TpmError,
  verifyQuote,
  type PcrValue,
  type QuoteAttest,
  type Tpm,
} from '../tpm/index.js';

/**
 * A quote of PCR `pcr` in some banks, its signature not yet checked. It carries no PCR values: the
 * collector finds them by replay, as the values whose hash is `pcrDigest` ({@link quoteFits}). A
 * PCR_Read after the quote would not do on a busy device: records keep being extended between the
 * two commands (measured on the emulator: Tpm.quote's quote-then-read gave up after 5 rounds).
 */
export interface QuoteEvidence {
  /** TPMS_ATTEST exactly as signed. */
  readonly attest: Uint8Array;
  /** TPMT_SIGNATURE. */
  readonly signature: Uint8Array;
  /** `attest`, parsed: selection, pcrDigest, clockInfo (resetCount changes on every TPM reset). */
  readonly parsed: QuoteAttest;
  /** Hash algorithm of the signature scheme: the pcrDigest's (TPM 2.0 Part 3 §18.4.1). */
  readonly digestAlg: number;
  /** The AK's TPM Name and public area (TPM2B_PUBLIC contents as the TPM returned them). */
  readonly akName: Uint8Array;
  readonly akPublic: Uint8Array;
}

/** True if `values` are the PCR values the quote attests (their hash is its pcrDigest). */
export function quoteFits(quote: QuoteEvidence, values: readonly PcrValue[]): boolean {
  const digest = computePcrDigest(quote.parsed.pcrSelections, values, quote.digestAlg);
  return digest !== undefined && bytesEqual(digest, quote.parsed.pcrDigest);
}

/**
 * Checks the quote's signature and nonce against its AK with the PCR values found (verifyQuote);
 * throws `QuoteVerifyError` otherwise. A checkpoint is stored only for a quote a verifier accepts.
 */
export function verifyEvidence(quote: QuoteEvidence, nonce: Uint8Array, values: readonly PcrValue[]): void {
  verifyQuote({ attest: quote.attest, signature: quote.signature, akPublic: publicKeyFromTpm2b(quote.akPublic), nonce, pcrs: values });
}

/** The TPM as the collector uses it. */
export interface QuoteSource {
  /** Banks the TPM has PCRs allocated in. */
  activeBanks(): Promise<readonly BankName[]>;
  /** TPM2_Quote of `pcr` in `banks` with `nonce` as qualifying data. */
  quote(nonce: Uint8Array, banks: readonly BankName[], pcr: number): Promise<QuoteEvidence>;
  /** Reads PCR `pcr` of `banks` (recovery's tie-break, and what a QUOTE_MISMATCH reports). */
  readPcrs(banks: readonly BankName[], pcr: number): Promise<readonly PcrValue[]>;
}

/** Options of {@link TpmQuoteSource}. */
export interface TpmQuoteSourceOptions {
  /**
   * Close the TPM connection after each call (default true). swtpm serves one connection at a
   * time (tpm-node.md §2) and other agents share a device's TPM; the AK is a primary key recreated
   * per quote anyway (an ECC primary: deterministic, no blob to keep, tpm-node.md §4).
   */
  readonly releaseAfterUse?: boolean;
}

/** {@link QuoteSource} over a `Tpm`: endorsement-hierarchy ECC AK, so quotes carry the real resetCount. */
export class TpmQuoteSource implements QuoteSource {
  readonly #tpm: Tpm;
  readonly #release: boolean;

  constructor(tpm: Tpm, options: TpmQuoteSourceOptions = {}) {
    this.#tpm = tpm;
    this.#release = options.releaseAfterUse ?? true;
  }

  activeBanks(): Promise<readonly BankName[]> {
    return this.#released(() => this.#tpm.getActiveBanks());
  }

  quote(nonce: Uint8Array, banks: readonly BankName[], pcr: number): Promise<QuoteEvidence> {
    const once = (): Promise<QuoteEvidence> =>
      this.#tpm.withAk({ alg: 'ecc', hierarchy: 'endorsement' }, async (ak) => {
        const selections = selectionOf(banks.map((bank) => ({ bank, pcr })));
        const { attest, signature } = await this.#tpm.execute(Quote, { signHandle: ak.handle, qualifyingData: nonce, selections });
        const digestAlg = parseSignature(signature).hashAlg;
        return { attest, signature, parsed: parseQuoteAttest(attest), digestAlg, akName: ak.name, akPublic: ak.public };
      });
    return this.#released(async () => {
      try {
        return await once();
      } catch (e) {
        // A daemon killed between CreatePrimary and FlushContext leaves its AK loaded; on a TPM
        // without a resource manager (swtpm, /dev/tpm0: 3 transient slots) three such crashes
        // make every CreatePrimary fail with TPM_RC_OBJECT_MEMORY (measured in the SIGKILL loop,
        // test/slow/collector-crash). Flush the leftovers once and try again. (/dev/tpmrm0 flushes
        // a client's objects when it closes, so this never happens there.)
        if (!(e instanceof TpmError && e.code === 'TPM_RC_OBJECT_MEMORY')) throw e;
        await this.#tpm.flushAllTransients();
        return once();
      }
    });
  }

  readPcrs(banks: readonly BankName[], pcr: number): Promise<readonly PcrValue[]> {
    return this.#released(() => this.#tpm.pcrRead(banks.map((bank) => ({ bank, pcr }))));
  }

  async #released<T>(task: () => Promise<T>): Promise<T> {
    try {
      return await task();
    } finally {
      if (this.#release) await this.#tpm.close();
    }
  }
}

const NONCE_LABEL = new TextEncoder().encode('imakeep/checkpoint-nonce/v1\0');

/**
 * The qualifying data of a boot's next quote, chaining every checkpoint to the one before:
 * SHA-256(label ‖ previous attest ‖ previous signature), or SHA-256(label ‖ kernel boot id) for a
 * boot's first checkpoint. A verifier recomputes it from the stored checkpoints, so a checkpoint
 * cannot be dropped from or moved within the chain without the next nonce showing it. 32 bytes:
 * the most TPM2_Quote takes with a SHA-256 AK.
 */
export function chainedNonce(previous: { readonly attest: Uint8Array; readonly signature: Uint8Array } | undefined, kernelBootId: string): Uint8Array {
  const tail = previous === undefined ? [new TextEncoder().encode(kernelBootId)] : [previous.attest, previous.signature];
  return sha256(concatBytes([NONCE_LABEL, ...tail]));
}
