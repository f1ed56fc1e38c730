/**
 * A {@link QuoteSource} over a `TpmQuoter`, for `imakeep serve --tpm`, the daemon's HTTP API and
 * tests. The AK is the deterministic primary (tpm-node.md §4), created per quote and flushed after,
 * so no slot stays taken and it is the same key the collector's checkpoints are signed with (same
 * template, same hierarchy). Given a `Tpm`, it quotes through a quoter over it, whose queue every
 * quoter of that `Tpm` shares: the collector's quotes and these never interleave.
 */
import type { BankName } from '../ima/index.js';
import { TpmQuoter, type PcrRef, type PcrValue, type SignedQuote, type Tpm, type TpmQuoterOptions } from '../tpm/index.js';
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

  readPcrs(pcrs: readonly PcrRef[]): Promise<readonly PcrValue[]> {
    return this.#quoter.readPcrs(pcrs);
  }

  resetAndExtend(pcr: number, digests: Partial<Record<BankName, Uint8Array>>): Promise<void> {
    return this.#quoter.resetAndExtend(pcr, digests);
  }
}
