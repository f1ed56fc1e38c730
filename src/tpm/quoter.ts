/**
 * The one owner of a process's TPM connection and attestation key. The daemon's users of the TPM
 * (the collector's checkpoints, the HTTP API's verifier quotes) all go through one `TpmQuoter`, so
 * their commands never interleave: on `/dev/tpmrm0` closing the connection flushes the client's
 * transient objects (the kernel resource manager flushes on fd close), and a close by one user
 * between another's CreatePrimary and Quote made that user's AK vanish.
 */
import type { BankName } from '../base/banks.js';
import { SerialQueue } from '../base/serial-queue.js';
import { Quote } from './commands.js';
import { TpmError } from './errors.js';
import type { PcrBinder, QuoteSource, QuoteWithPcrs, SignedQuote } from './quote.js';
import { parseQuoteAttest, selectionOf, type AkAlgorithm, type PcrRef, type PcrValue } from './structures.js';
import type { AkHierarchy, AttestationKey, Tpm } from './tpm.js';
import { parseSignature } from './verify.js';

/** Options of {@link TpmQuoter}. */
export interface TpmQuoterOptions {
  /** AK algorithm; default `ecc` (a deterministic primary: no blob to keep, docs/tpm.md#the-attestation-key). */
  readonly alg?: AkAlgorithm;
  /** AK hierarchy; default `endorsement` (quotes carry the real reset and restart counts). */
  readonly hierarchy?: AkHierarchy;
  /**
   * Close the TPM connection after each operation (default true). swtpm serves one connection at a
   * time (docs/tpm.md#swtpm) and other agents share a device's TPM; the AK is recreated per quote anyway.
   */
  readonly releaseAfterUse?: boolean;
}

/** The operations queued on each `Tpm`, shared by every quoter over it. */
const queues = new WeakMap<Tpm, SerialQueue>();

/**
 * Serialises every use of a `Tpm`: one operation (AK created, used, flushed, connection released)
 * at a time, across all quoters over the same `Tpm` (the queue belongs to the `Tpm`, so two
 * quoters built on one connection still cannot interleave: safe by construction).
 */
export class TpmQuoter implements QuoteSource, PcrBinder {
  readonly #tpm: Tpm;
  readonly #ak: { readonly alg: AkAlgorithm; readonly hierarchy: AkHierarchy };
  readonly #release: boolean;
  readonly #queue: SerialQueue;

  constructor(tpm: Tpm, options: TpmQuoterOptions = {}) {
    this.#tpm = tpm;
    this.#ak = { alg: options.alg ?? 'ecc', hierarchy: options.hierarchy ?? 'endorsement' };
    this.#release = options.releaseAfterUse ?? true;
    const queue = queues.get(tpm) ?? new SerialQueue();
    queues.set(tpm, queue);
    this.#queue = queue;
  }

  /** A quoter over `tpm`, or `tpm` itself if it is one. */
  static of(tpm: Tpm | TpmQuoter, options?: TpmQuoterOptions): TpmQuoter {
    return tpm instanceof TpmQuoter ? tpm : new TpmQuoter(tpm, options);
  }

  /** Banks the TPM has PCRs allocated in. */
  activeBanks(): Promise<BankName[]> {
    return this.#exclusive(() => this.#tpm.getActiveBanks());
  }

  /** Reads `pcrs` (TPM2_PCR_Read). */
  readPcrs(pcrs: readonly PcrRef[]): Promise<PcrValue[]> {
    return this.#exclusive(() => this.#tpm.pcrRead(pcrs));
  }

  /**
   * Resets `pcr`, then extends it once with `digests` (one per bank): afterwards it holds
   * H(0…0 ‖ digest) in each bank given, and zeros in the others.
   */
  resetAndExtend(pcr: number, digests: Partial<Record<BankName, Uint8Array>>): Promise<void> {
    return this.#exclusive(async () => {
      await this.#tpm.pcrReset(pcr);
      await this.#tpm.pcrExtend(pcr, digests);
    });
  }

  /** TPM2_Quote of `pcrs` with `nonce` as qualifying data; no PCR is read. */
  quote(nonce: Uint8Array, pcrs: readonly PcrRef[]): Promise<SignedQuote> {
    return this.#withAk(async (ak) => {
      const { attest, signature } = await this.#tpm.execute(Quote, { signHandle: ak.handle, qualifyingData: nonce, selections: selectionOf(pcrs) });
      return { attest, signature, parsed: parseQuoteAttest(attest), digestAlg: parseSignature(signature).hashAlg, akName: ak.name, akPublic: ak.public };
    });
  }

  /**
   * Quote, then PCR_Read, until they agree (`Tpm.quote`): for PCRs no log replays. Throws
   * `TPM_PCRS_UNSTABLE` when a PCR keeps moving.
   */
  quoteAndRead(nonce: Uint8Array, pcrs: readonly PcrRef[]): Promise<QuoteWithPcrs> {
    return this.#withAk((ak) => this.#tpm.quote({ nonce, pcrs, ak }));
  }

  /**
   * Runs `task` on the TPM between the quoter's own operations (enrollment's EK and credential
   * activation in the daemon: no quote may interleave with it).
   */
  use<T>(task: (tpm: Tpm) => Promise<T>): Promise<T> {
    return this.#exclusive(() => task(this.#tpm));
  }

  /** Closes the connection after the operations queued so far. */
  async close(): Promise<void> {
    await this.#queue.idle();
    await this.#tpm.close();
  }

  #withAk<T>(use: (ak: AttestationKey) => Promise<T>): Promise<T> {
    return this.#exclusive(async () => {
      try {
        return await this.#tpm.withAk(this.#ak, use);
      } catch (e) {
        // A process killed between CreatePrimary and FlushContext leaves its AK loaded; on a TPM
        // without a resource manager (swtpm, /dev/tpm0: 3 transient slots) three such crashes
        // make every CreatePrimary fail with TPM_RC_OBJECT_MEMORY (measured in the SIGKILL loop,
        // test/slow/collector-crash). Flush the leftovers once and try again.
        if (!(e instanceof TpmError && e.code === 'TPM_RC_OBJECT_MEMORY')) throw e;
        await this.#tpm.flushAllTransients();
        return this.#tpm.withAk(this.#ak, use);
      }
    });
  }

  /** Runs `task` after every operation queued before it, then releases the connection if configured. */
  #exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      try {
        return await task();
      } finally {
        if (this.#release) await this.#tpm.close();
      }
    };
    return this.#queue.run(run);
  }
}
