/**
 * A {@link QuoteSource} over a `TpmQuoter`, for `imakeep serve --tpm`, the daemon's HTTP API and
 * tests. The AK is the deterministic primary (docs/tpm.md#the-attestation-key), created per quote and flushed after,
 * so no slot stays taken and it is the same key the collector's checkpoints are signed with (same
 * template, same hierarchy). Given a `Tpm`, it quotes through a quoter over it, whose queue every
 * quoter of that `Tpm` shares: the collector's quotes and these never interleave.
 */
import { TpmQuoter, type PcrRef, type SignedQuote, type Tpm, type TpmQuoterOptions } from '../tpm/index.js';
import type { FreshQuote, QuoteSource } from './sources.js';

/** Options of {@link TpmQuoteSource} (used when it is given a `Tpm` rather than a quoter). */
export type TpmQuoteSourceOptions = TpmQuoterOptions;

/** Quotes through one `TpmQuoter`, one operation at a time. */
export class TpmQuoteSource implements QuoteSource {
  readonly #quoter: TpmQuoter;

  constructor(tpm: Tpm | TpmQuoter, options: TpmQuoteSourceOptions = {}) {
    this.#quoter = TpmQuoter.of(tpm, options);
  }

  quote(request: { readonly nonce: Uint8Array; readonly pcrs: readonly PcrRef[] }): Promise<SignedQuote> {
    return this.#quoter.quote(request.nonce, request.pcrs);
  }

  quoteAndRead(request: { readonly nonce: Uint8Array; readonly pcrs: readonly PcrRef[] }): Promise<FreshQuote> {
    return this.#quoter.quoteAndRead(request.nonce, request.pcrs);
  }
}
