/**
 * The quote port: the two shapes a quote takes in imakeep and the one interface through which the
 * collector's checkpoints and the API's verifier quotes reach the TPM. `TpmQuoter` implements it;
 * tests wrap a quoter to inject faults (a PCR extended behind IMA's back, a TPM that fails).
 */
import type { BankName } from '../base/banks.js';
import { refsOf, type PcrRef, type PcrSelection, type PcrValue, type QuoteAttest } from './structures.js';
import { bytesEqual } from '../base/bytes.js';
import { computePcrDigest, publicKeyFromTpm2b, verifyQuote } from './verify.js';

/**
 * A quote as the TPM signed it, its signature not yet checked, with no PCR values: which values it
 * attests is found by replaying the event log (`replayUntilFits` of src/ima with
 * {@link quoteTarget}), since a PCR_Read after it races IMA's extends.
 */
export interface SignedQuote {
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

/** A quote with the PCR values it attests (they hash to its pcrDigest), in quote order. */
export interface QuoteWithPcrs extends SignedQuote {
  readonly pcrs: readonly PcrValue[];
}

/**
 * The TPM as its users in the daemon see it: the collector (checkpoints, recovery's PCR reads)
 * and the API server (verifiers' quotes). One implementation, `TpmQuoter`, serialises them.
 */
export interface QuoteSource {
  /** Banks the TPM has PCRs allocated in. */
  activeBanks(): Promise<readonly BankName[]>;
  /** TPM2_PCR_Read of `pcrs`. */
  readPcrs(pcrs: readonly PcrRef[]): Promise<readonly PcrValue[]>;
  /** TPM2_Quote of `pcrs` with `nonce` as qualifying data; no PCR is read. */
  quote(nonce: Uint8Array, pcrs: readonly PcrRef[]): Promise<SignedQuote>;
  /**
   * Quote, then PCR_Read until the values hash to the quote's digest: for PCRs no log replays.
   * Throws `TPM_PCRS_UNSTABLE` when a PCR keeps moving.
   */
  quoteAndRead(nonce: Uint8Array, pcrs: readonly PcrRef[]): Promise<QuoteWithPcrs>;
}

/**
 * A PCR its owner resets and extends with data before quoting it: Keylime's data PCR 16, which
 * binds the agent's payload key into every quote (rust-keylime `keylime/src/tpm.rs`,
 * `build_pcr_list`). `TpmQuoter` does both commands as one operation of its queue, so no quote or
 * read of any user of the TPM sees the PCR reset but not yet extended; every binding of the same
 * data leaves the same value, so concurrent verifiers' quotes all see it.
 */
export interface PcrBinder {
  /** PCR_Reset of `pcr` (Part 3 §22.3), then one PCR_Extend with `digests`, one per bank. */
  resetAndExtend(pcr: number, digests: Partial<Record<BankName, Uint8Array>>): Promise<void>;
}

/** What of a quote checking PCR values against it needs: its selection and digest, and the digest's hash. */
export interface QuotedDigest {
  readonly parsed: { readonly pcrSelections: readonly PcrSelection[]; readonly pcrDigest: Uint8Array };
  readonly digestAlg: number;
}

/** True if `values` are the PCR values the quote attests (their hash is its pcrDigest, Part 3 §18.4.1). */
export function quoteFits(quote: QuotedDigest, values: readonly PcrValue[]): boolean {
  const digest = computePcrDigest(quote.parsed.pcrSelections, values, quote.digestAlg);
  return digest !== undefined && bytesEqual(digest, quote.parsed.pcrDigest);
}

/**
 * The quote as a target for a log replay (`replayUntilFits` of src/ima): the PCRs it selects, in
 * selection order, and whether replayed values are the ones it attests.
 */
export function quoteTarget(quote: QuotedDigest): { readonly pcrs: readonly PcrRef[]; fits(values: readonly PcrValue[]): boolean } {
  return { pcrs: refsOf(quote.parsed.pcrSelections), fits: (values) => quoteFits(quote, values) };
}

/**
 * Checks the quote's signature and nonce against its own AK with the PCR values found (by replay or
 * read); throws `QuoteVerifyError` otherwise. The AK is the one the quote carries: whether a
 * verifier trusts it is the verifier's business (src/verify).
 */
export function verifySignedQuote(quote: SignedQuote, nonce: Uint8Array, values: readonly PcrValue[]): void {
  verifyQuote({ attest: quote.attest, signature: quote.signature, akPublic: publicKeyFromTpm2b(quote.akPublic), nonce, pcrs: values });
}
