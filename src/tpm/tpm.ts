/**
 * `Tpm`: the commands imakeep needs, over any `TpmTransport`, with bounded retries of the TPM's
 * "try again" warnings and the Keylime-style quote flow (rust-keylime `keylime/src/tpm.rs`; docs/tpm.md).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { BANKS, DIGEST_SIZE, type BankName } from '../base/banks.js';
import { decodeResponse, encodeCommand, type TpmCommand } from './command.js';
import {
  CreatePrimary,
  FlushContext,
  GetCapability,
  GetRandom,
  PcrExtend,
  PcrRead,
  PcrReset,
  Quote,
  ReadPublic,
  type ReadPublicResponse,
  Startup,
} from './commands.js';
import { BANK_ALG, TPM_CAP, TPM_RH, TPM_SU, TRANSIENT_FIRST, bankOfAlg } from './constants.js';
import { TpmError, TpmPcrUnavailableError, TpmPcrsUnstableError, TpmProtocolError } from './errors.js';
import { TpmReader } from './marshal.js';
import {
  type AkAlgorithm,
  type PcrRef,
  type PcrSelection,
  type PcrValue,
  parseQuoteAttest,
  readSignature,
  refsOf,
  selectionOf,
} from './structures.js';
import { openTpmTransport, type TpmTransport } from './transport.js';
import { quoteFits, type QuoteWithPcrs } from './quote.js';

/** Options of `Tpm`. */
export interface TpmOptions {
  /** Retries of a command answered with TPM_RC_RETRY, YIELDED or TESTING. Default 5. */
  readonly retries?: number;
  /** Delay before the first retry in ms, doubled on each further one. Default 10. */
  readonly retryDelayMs?: number;
}

/** Hierarchy an attestation key is created under. */
export type AkHierarchy = 'endorsement' | 'owner';

/** An attestation key loaded in the TPM: flush it with `Tpm.flush(handle)` when done. */
export interface AttestationKey {
  /** Transient handle (0x80xxxxxx). */
  readonly handle: number;
  readonly alg: AkAlgorithm;
  readonly hierarchy: AkHierarchy;
  /** `TPM2B_PUBLIC` bytes as the TPM returned them: convert with `publicKeyFromTpm2b`. */
  readonly public: Uint8Array;
  /** TPM Name: nameAlg ‖ H(TPMT_PUBLIC). */
  readonly name: Uint8Array;
}

/** Options of `Tpm.createAk`. */
export interface CreateAkOptions {
  /** Default `ecc` (NIST P-256, ECDSA-SHA256; RSA-2048 primaries take 20-30 ms on swtpm, seconds on chips). */
  readonly alg?: AkAlgorithm;
  /**
   * Default `endorsement`: quotes then carry the real resetCount, restartCount and
   * firmwareVersion; the owner hierarchy obfuscates them (docs/tpm.md#the-attestation-key).
   */
  readonly hierarchy?: AkHierarchy;
}

/** Input of `Tpm.quote`. */
export interface QuoteOptions {
  /** The verifier's nonce, at most 32 bytes for a SHA-256 AK. */
  readonly nonce: Uint8Array;
  /** PCRs to quote; they are quoted and returned in TPM order (bank by first appearance, PCR ascending). */
  readonly pcrs: readonly PcrRef[];
  readonly ak: AttestationKey;
  /** Quote + read rounds before giving up with `TPM_PCRS_UNSTABLE`. Default 5 (as Keylime). */
  readonly attempts?: number;
}

const HIERARCHY_HANDLE: Readonly<Record<AkHierarchy, number>> = {
  endorsement: TPM_RH.ENDORSEMENT,
  owner: TPM_RH.OWNER,
};

/** Rounds of a split PCR_Read before giving up when the update counter keeps moving. */
const PCR_READ_ROUNDS = 5;

const refKey = (hashAlg: number, pcr: number): string => `${hashAlg}:${pcr}`;

/**
 * A TPM reached through a transport. Commands go out one at a time (the transport queues
 * concurrent callers). Never sends TPM2_Startup on its own: firmware (or swtpm's
 * `--flags startup-clear`) does it.
 */
export class Tpm {
  private readonly retries: number;
  private readonly retryDelayMs: number;

  constructor(
    /** The transport; closed by `close()`. */
    readonly transport: TpmTransport,
    options: TpmOptions = {},
  ) {
    this.retries = options.retries ?? 5;
    this.retryDelayMs = options.retryDelayMs ?? 10;
  }

  /** A `Tpm` on a TPM address (`swtpm:HOST:PORT`, `device:/dev/tpmrm0`); see `openTpmTransport`. */
  static open(address: string, options?: TpmOptions): Tpm {
    return new Tpm(openTpmTransport(address), options);
  }

  /**
   * Sends one command and decodes its response. Retries TPM_RC_RETRY, YIELDED and TESTING up to
   * `retries` times with exponential backoff; every other failure is thrown as it is.
   */
  async execute<Req, Res>(command: TpmCommand<Req, Res>, request: Req): Promise<Res> {
    const bytes = encodeCommand(command, request);
    for (let attempt = 0; ; attempt++) {
      try {
        return decodeResponse(command, await this.transport.send(bytes));
      } catch (err) {
        if (!(err instanceof TpmError && err.retryable && attempt < this.retries)) throw err;
        await sleep(this.retryDelayMs * 2 ** attempt);
      }
    }
  }

  /** TPM2_Startup(CLEAR) for a simulator started without `startup-clear`; TPM_RC_INITIALIZE (already started) is fine. */
  async startup(): Promise<void> {
    try {
      await this.execute(Startup, { startupType: TPM_SU.CLEAR });
    } catch (err) {
      if (!(err instanceof TpmError && err.code === 'TPM_RC_INITIALIZE')) throw err;
    }
  }

  /** Banks with at least one PCR allocated (GetCapability TPM_CAP_PCRS), in the TPM's order. */
  async getActiveBanks(): Promise<BankName[]> {
    const res = await this.execute(GetCapability, { capability: TPM_CAP.PCRS, property: 0, propertyCount: 1 });
    if (res.capability !== 'pcrs') throw new TpmProtocolError(`GetCapability(PCRS) answered ${res.capability}`);
    return res.selections.flatMap(({ hashAlg, pcrs }) => {
      const bank = bankOfAlg(hashAlg);
      return bank !== undefined && pcrs.length > 0 ? [bank] : [];
    });
  }

  /**
   * Reads PCRs. Returns them in TPM order (bank by first appearance, PCR ascending). A TPM returns
   * at most 8 digests per PCR_Read, so larger selections take several calls; if a PCR changes
   * between them (the update counter moves) the whole read starts over, up to 5 rounds.
   * Throws `TpmPcrUnavailableError` for PCRs the TPM does not have (inactive bank).
   */
  async pcrRead(pcrs: readonly PcrRef[]): Promise<PcrValue[]> {
    const wanted = selectionOf(pcrs);
    for (let round = 0; round < PCR_READ_ROUNDS; round++) {
      const read = await this.pcrReadOnce(wanted);
      if (read === undefined) continue;
      const out: PcrValue[] = [];
      const missing: string[] = [];
      for (const ref of refsOf(wanted)) {
        const value = read.get(refKey(BANK_ALG[ref.bank], ref.pcr));
        if (value === undefined) missing.push(`${ref.bank}:${ref.pcr}`);
        else out.push({ ...ref, value });
      }
      if (missing.length > 0) throw new TpmPcrUnavailableError(missing);
      return out;
    }
    throw new TpmPcrsUnstableError('PCR_Read', PCR_READ_ROUNDS);
  }

  /** One round of split PCR_Reads; undefined when the update counter moved in between. */
  private async pcrReadOnce(wanted: readonly PcrSelection[]): Promise<Map<string, Uint8Array> | undefined> {
    const values = new Map<string, Uint8Array>();
    let remaining = wanted;
    let counter: number | undefined;
    while (remaining.some((s) => s.pcrs.length > 0)) {
      const res = await this.execute(PcrRead, { selections: remaining });
      if (counter !== undefined && res.updateCounter !== counter) return undefined;
      counter = res.updateCounter;
      const returned = res.selections.flatMap(({ hashAlg, pcrs }) => pcrs.map((pcr) => ({ hashAlg, pcr })));
      if (returned.length !== res.digests.length) {
        throw new TpmProtocolError(`PCR_Read selected ${returned.length} PCRs but returned ${res.digests.length} digests`);
      }
      if (returned.length === 0) break; // the rest is not allocated
      returned.forEach(({ hashAlg, pcr }, i) => {
        const digest = res.digests[i] ?? new Uint8Array(0);
        const bank = bankOfAlg(hashAlg);
        if (bank === undefined || digest.length !== DIGEST_SIZE[bank]) {
          throw new TpmProtocolError(`PCR_Read returned a ${digest.length}-byte digest for alg 0x${hashAlg.toString(16)}`);
        }
        values.set(refKey(hashAlg, pcr), digest);
      });
      remaining = remaining.map(({ hashAlg, pcrs }) => ({ hashAlg, pcrs: pcrs.filter((p) => !values.has(refKey(hashAlg, p))) }));
    }
    return values;
  }

  /**
   * Extends one PCR in the given banks: each bank's PCR becomes H(old ‖ digest). Digests must be
   * the bank's size (RangeError otherwise).
   */
  async pcrExtend(pcr: number, digests: Partial<Record<BankName, Uint8Array>>): Promise<void> {
    const list = BANKS.flatMap((bank) => {
      const digest = digests[bank];
      if (digest === undefined) return [];
      if (digest.length !== DIGEST_SIZE[bank]) {
        throw new RangeError(`${bank} digest must be ${DIGEST_SIZE[bank]} bytes, got ${digest.length}`);
      }
      return [{ hashAlg: BANK_ALG[bank], digest }];
    });
    await this.execute(PcrExtend, { pcr, digests: list });
  }

  /** Resets one PCR to its default value in every bank (TPM2_PCR_Reset; PCR 16 or 23 at locality 0). */
  async pcrReset(pcr: number): Promise<void> {
    await this.execute(PcrReset, { pcr });
  }

  /** Up to `n` random bytes from the TPM (it may return fewer than asked). */
  getRandom(n: number): Promise<Uint8Array> {
    return this.execute(GetRandom, { bytesRequested: n });
  }

  /**
   * Creates the attestation key as a primary object: the same template and hierarchy seed give the
   * same key every time, so no key blob needs storing (docs/tpm.md#the-attestation-key). Flush it when done.
   */
  async createAk(options: CreateAkOptions = {}): Promise<AttestationKey> {
    const alg = options.alg ?? 'ecc';
    const hierarchy = options.hierarchy ?? 'endorsement';
    const res = await this.execute(CreatePrimary, { hierarchy: HIERARCHY_HANDLE[hierarchy], alg });
    return { handle: res.handle, alg, hierarchy, public: res.outPublic, name: res.name };
  }

  /** Creates an AK, runs `use` with it, and flushes it afterwards whatever happens. */
  async withAk<T>(options: CreateAkOptions, use: (ak: AttestationKey) => Promise<T>): Promise<T> {
    const ak = await this.createAk(options);
    try {
      return await use(ak);
    } finally {
      await this.flush(ak.handle);
    }
  }

  /** The public area and Name of a loaded object (TPM2_ReadPublic). */
  readPublic(handle: number): Promise<ReadPublicResponse> {
    return this.execute(ReadPublic, { handle });
  }

  /** Unloads a transient object or session (TPM2_FlushContext). */
  async flush(handle: number): Promise<void> {
    await this.execute(FlushContext, { flushHandle: handle });
  }

  /** Handles of the loaded transient objects (GetCapability TPM_CAP_HANDLES from 0x80000000). */
  async transientHandles(): Promise<number[]> {
    const handles: number[] = [];
    for (let from = TRANSIENT_FIRST; ; ) {
      const res = await this.execute(GetCapability, { capability: TPM_CAP.HANDLES, property: from, propertyCount: 64 });
      if (res.capability !== 'handles') throw new TpmProtocolError(`GetCapability(HANDLES) answered ${res.capability}`);
      const transient = res.handles.filter((h) => h >>> 24 === TRANSIENT_FIRST >>> 24);
      handles.push(...transient);
      const last = transient.at(-1);
      if (!res.moreData || last === undefined || transient.length < res.handles.length) return handles;
      from = last + 1;
    }
  }

  /** Flushes every loaded transient object (swtpm has 3 slots and no resource manager); returns how many. */
  async flushAllTransients(): Promise<number> {
    const handles = await this.transientHandles();
    for (const h of handles) await this.flush(h);
    return handles.length;
  }

  /**
   * Quotes PCRs with `ak`, then reads them, and repeats (up to `attempts`, default 5) until the
   * values read hash to the quote's pcrDigest: a PCR extended between the two commands would
   * otherwise hand the verifier values the quote does not cover (rust-keylime
   * `perform_quote_and_pcr_read`). Throws `TpmPcrsUnstableError` when they never agree.
   */
  async quote(options: QuoteOptions): Promise<QuoteWithPcrs & { readonly attempts: number }> {
    const selections = selectionOf(options.pcrs);
    const attempts = options.attempts ?? 5;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const { attest, signature } = await this.execute(Quote, {
        signHandle: options.ak.handle,
        qualifyingData: options.nonce,
        selections,
      });
      const parsed = parseQuoteAttest(attest);
      const digestAlg = readSignature(new TpmReader(signature)).hashAlg;
      const pcrs = await this.pcrRead(options.pcrs);
      if (quoteFits({ parsed, digestAlg }, pcrs)) {
        return { attest, signature, parsed, digestAlg, akName: options.ak.name, akPublic: options.ak.public, pcrs, attempts: attempt };
      }
    }
    throw new TpmPcrsUnstableError('quote and PCR_Read', attempts);
  }

  /** Closes the transport. */
  close(): Promise<void> {
    return this.transport.close();
  }
}
