/**
 * Where checkpoints' quotes come from. The collector talks to the TPM only through
 * {@link QuoteSource}: production wraps the process's `TpmQuoter` ({@link TpmQuoteSource}), tests
 * wrap that to inject faults (a PCR extended behind IMA's back, a TPM that fails). The caller owns
 * and closes the TPM.
 */
import type { BankName } from '../ima/index.js';
import { TpmQuoter, publicKeyFromTpm2b, verifyQuote, type PcrValue, type SignedQuote, type Tpm, type TpmQuoterOptions } from '../tpm/index.js';

/**
 * A quote of PCR `pcr` in some banks, its signature not yet checked. It carries no PCR values: the
 * collector finds them by replay (`replayToQuote` of src/tpm).
 */
export type QuoteEvidence = SignedQuote;

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

/** Options of {@link TpmQuoteSource} (used when it is given a `Tpm` rather than a quoter). */
export type TpmQuoteSourceOptions = TpmQuoterOptions;

/**
 * {@link QuoteSource} over a `TpmQuoter` (endorsement-hierarchy ECC AK by default, so quotes carry
 * the real resetCount). Given a `Tpm`, it quotes through a quoter over it: every quoter of one
 * `Tpm` shares its queue, so the daemon's HTTP API quoting on the same TPM never interleaves.
 */
export class TpmQuoteSource implements QuoteSource {
  readonly #quoter: TpmQuoter;

  constructor(tpm: Tpm | TpmQuoter, options: TpmQuoteSourceOptions = {}) {
    this.#quoter = TpmQuoter.of(tpm, options);
  }

  activeBanks(): Promise<readonly BankName[]> {
    return this.#quoter.activeBanks();
  }

  quote(nonce: Uint8Array, banks: readonly BankName[], pcr: number): Promise<QuoteEvidence> {
    return this.#quoter.quote(nonce, banks.map((bank) => ({ bank, pcr })));
  }

  readPcrs(banks: readonly BankName[], pcr: number): Promise<readonly PcrValue[]> {
    return this.#quoter.readPcrs(banks.map((bank) => ({ bank, pcr })));
  }
}
