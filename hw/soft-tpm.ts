/**
 * A software stand-in for the TPM behind the quote port (`QuoteSource` of src/tpm), for runs too long for
 * swtpm (1M records: one PCR_Extend per record costs ~0.2 ms on swtpm). Its PCR 10 is a PcrReplay
 * the harness extends after it logs records (log before extend, like the kernel); its quotes are
 * real TPMS_ATTEST structures signed with a software ECC P-256 key whose TPM2B_PUBLIC is built like
 * the TPM's AK, so the collector's verification (verifyQuote) runs unchanged.
 */
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { PcrReplay, type BankName, type ImaRecord, type PcrReplayState } from '../src/ima/index.js';
import { TPM_ALG, TPM_GENERATED_VALUE, parseQuoteAttest, parseTpm2bPublic, tpmName, type PcrRef, type PcrValue, type QuoteSource, type QuoteWithPcrs, type SignedQuote } from '../src/tpm/index.js';
import { AK_ATTRIBUTES, TPM_ECC, TPM_ST, TpmWriter, computePcrDigest, selectionOf, writePcrSelections } from '../src/testing/index.js';

const BANKS: readonly BankName[] = ['sha1', 'sha256'];

/** The software TPM. */
export class SoftQuoteSource implements QuoteSource {
  #replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' }, verifyDigests: false });
  readonly #key: KeyObject;
  readonly #akPublic: Uint8Array;
  readonly #akName: Uint8Array;
  quotes = 0;

  constructor() {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.#key = privateKey;
    const jwk = publicKey.export({ format: 'jwk' });
    const coord = (v: string | undefined): Uint8Array => new Uint8Array(Buffer.from(v ?? '', 'base64url'));
    const area = new TpmWriter()
      .u16(TPM_ALG.ECC)
      .u16(TPM_ALG.SHA256)
      .u32(AK_ATTRIBUTES)
      .tpm2b(new Uint8Array(0))
      .u16(TPM_ALG.NULL)
      .u16(TPM_ALG.ECDSA)
      .u16(TPM_ALG.SHA256)
      .u16(TPM_ECC.NIST_P256)
      .u16(TPM_ALG.NULL)
      .tpm2b(coord(jwk.x))
      .tpm2b(coord(jwk.y))
      .finish();
    this.#akPublic = new TpmWriter().tpm2b(area).finish();
    this.#akName = tpmName(parseTpm2bPublic(this.#akPublic));
  }

  /** Extends records into the software PCRs (call after logging them). */
  extend(records: Iterable<ImaRecord>): void {
    for (const rec of records) this.#replay.extend(rec);
  }

  /**
   * Takes the PCRs as another process extended them (the ingest bench's feeder, which logs and
   * extends like the kernel, outside the measured process): they replace this TPM's values.
   */
  setPcrs(state: PcrReplayState): void {
    this.#replay = PcrReplay.fromState(state, { verifyDigests: false });
  }

  async activeBanks(): Promise<readonly BankName[]> {
    return BANKS;
  }

  async readPcrs(pcrs: readonly PcrRef[]): Promise<readonly PcrValue[]> {
    return pcrs.map(({ bank, pcr }) => ({ bank, pcr, value: this.#replay.value(bank, pcr) }));
  }

  async quote(nonce: Uint8Array, pcrs: readonly PcrRef[]): Promise<SignedQuote> {
    this.quotes++;
    const selections = selectionOf(pcrs);
    const values = await this.readPcrs(pcrs);
    const w = new TpmWriter().u32(TPM_GENERATED_VALUE).u16(TPM_ST.ATTEST_QUOTE).tpm2b(this.#akName).tpm2b(nonce);
    w.u64(BigInt(this.quotes)).u32(1).u32(0).u8(1).u64(0n);
    writePcrSelections(w, selections);
    w.tpm2b(computePcrDigest(selections, values, TPM_ALG.SHA256) ?? new Uint8Array(32));
    const attest = w.finish();
    const rs = sign('sha256', attest, { key: this.#key, dsaEncoding: 'ieee-p1363' });
    const signature = new TpmWriter().u16(TPM_ALG.ECDSA).u16(TPM_ALG.SHA256).tpm2b(rs.subarray(0, 32)).tpm2b(rs.subarray(32)).finish();
    return { attest, signature, parsed: parseQuoteAttest(attest), digestAlg: TPM_ALG.SHA256, akName: this.#akName, akPublic: this.#akPublic };
  }

  /** Nothing extends behind the harness's back: the values read right after the quote are the quoted ones. */
  async quoteAndRead(nonce: Uint8Array, pcrs: readonly PcrRef[]): Promise<QuoteWithPcrs> {
    return { ...(await this.quote(nonce, pcrs)), pcrs: await this.readPcrs(pcrs) };
  }
}
