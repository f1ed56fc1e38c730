/**
 * A {@link QuoteSource} over a `Tpm`, for `imakeep serve --tpm` and tests; the collector brings its
 * own (it already holds the TPM). The AK is the deterministic primary (tpm-node.md §4): created
 * per quote and flushed after, so no slot stays taken and it is the same key the collector's
 * checkpoints are signed with (same template, same hierarchy).
 */
import type { AkHierarchy, PcrRef, Tpm } from '../tpm/index.js';
import type { AkAlgorithm } from '../tpm/index.js';
import type { FreshQuote, QuoteSource } from './sources.js';

/** Options of {@link TpmQuoteSource}. */
export interface TpmQuoteSourceOptions {
  /** Default `ecc`. */
  readonly alg?: AkAlgorithm;
  /** Default `endorsement` (real reset and restart counts in the quotes). */
  readonly hierarchy?: AkHierarchy;
}

/** Quotes with a primary AK, one quote at a time (a TPM without a resource manager has 3 object slots). */
export class TpmQuoteSource implements QuoteSource {
  readonly #tpm: Tpm;
  readonly #options: Required<TpmQuoteSourceOptions>;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(tpm: Tpm, options: TpmQuoteSourceOptions = {}) {
    this.#tpm = tpm;
    this.#options = { alg: options.alg ?? 'ecc', hierarchy: options.hierarchy ?? 'endorsement' };
  }

  /** Quotes `pcrs` with `nonce`, waiting for quotes asked before it. */
  quote(request: { readonly nonce: Uint8Array; readonly pcrs: readonly PcrRef[] }): Promise<FreshQuote> {
    const run = (): Promise<FreshQuote> =>
      this.#tpm.withAk(this.#options, async (ak) => {
        const q = await this.#tpm.quote({ nonce: request.nonce, pcrs: request.pcrs, ak });
        return { attest: q.attest, signature: q.signature, pcrs: q.pcrs, akPublic: ak.public };
      });
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }
}
