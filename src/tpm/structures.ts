/**
 * TPM structures shared by the commands and the offline verifier, each with the Part 2 section
 * that defines its layout. Parsers throw `TpmProtocolError` (`TPM_BAD_RESPONSE`) on malformed input.
 */
import type { BankName } from '../base/banks.js';
import { BANK_ALG, TPM_ALG, TPM_ECC, TPM_ST, bankOfAlg } from './constants.js';
import { TpmProtocolError } from './errors.js';
import { TpmReader, type TpmWriter } from './marshal.js';

/** One PCR of one bank. */
export interface PcrRef {
  readonly bank: BankName;
  readonly pcr: number;
}

/** One PCR of one bank with its value. */
export interface PcrValue extends PcrRef {
  readonly value: Uint8Array;
}

/** A `TPMS_PCR_SELECTION` (Part 2 §10.6.2): a hash algorithm and the PCRs selected in its bank. */
export interface PcrSelection {
  /** TPM_ALG_ID of the bank (kept numeric: a TPM may report banks imakeep has no name for). */
  readonly hashAlg: number;
  /** Selected PCR indexes, ascending. */
  readonly pcrs: readonly number[];
}

/** Highest PCR index a selection may name: `sizeofSelect` is a u8 of bitmap bytes. */
const MAX_PCR = 255 * 8 - 1;

/**
 * Groups PCR references into selections: banks in order of first appearance, PCRs ascending and
 * unique. This is the order in which the TPM returns digests and hashes them into a quote.
 */
export function selectionOf(refs: readonly PcrRef[]): PcrSelection[] {
  const byBank = new Map<BankName, Set<number>>();
  for (const { bank, pcr } of refs) {
    if (!Number.isInteger(pcr) || pcr < 0 || pcr > MAX_PCR) throw new RangeError(`PCR index ${pcr} out of range`);
    const set = byBank.get(bank) ?? new Set<number>();
    set.add(pcr);
    byBank.set(bank, set);
  }
  return [...byBank].map(([bank, set]) => ({ hashAlg: BANK_ALG[bank], pcrs: [...set].sort((a, b) => a - b) }));
}

/**
 * The PCRs of selections in TPM order (selection by selection, PCR ascending). Throws
 * `TpmProtocolError` for a bank imakeep has no name for.
 */
export function refsOf(selections: readonly PcrSelection[]): PcrRef[] {
  return selections.flatMap(({ hashAlg, pcrs }) => {
    const bank = bankOfAlg(hashAlg);
    if (bank === undefined) throw new TpmProtocolError(`unsupported PCR bank algorithm 0x${hashAlg.toString(16)}`);
    return pcrs.map((pcr) => ({ bank, pcr }));
  });
}

/** Writes a `TPML_PCR_SELECTION` (Part 2 §10.9.7); bitmaps are at least 3 bytes (24 PCRs), as PC TPMs expect. */
export function writePcrSelections(w: TpmWriter, selections: readonly PcrSelection[]): void {
  w.u32(selections.length);
  for (const { hashAlg, pcrs } of selections) {
    const bitmap = new Uint8Array(Math.max(3, ...pcrs.map((p) => (p >> 3) + 1)));
    for (const p of pcrs) bitmap[p >> 3] |= 1 << (p & 7);
    w.u16(hashAlg).u8(bitmap.length).bytes(bitmap);
  }
}

/** Reads a `TPML_PCR_SELECTION` (Part 2 §10.9.7). */
export function readPcrSelections(r: TpmReader): PcrSelection[] {
  const count = r.u32('TPML_PCR_SELECTION.count');
  // TPM2_NUM_PCR_BANKS is 16 in the reference implementation; a larger count is garbage.
  if (count > 16) throw new TpmProtocolError(`TPML_PCR_SELECTION count ${count} > 16`, r.offset - 4);
  const out: PcrSelection[] = [];
  for (let i = 0; i < count; i++) {
    const hashAlg = r.u16('TPMS_PCR_SELECTION.hash');
    const bitmap = r.bytes(r.u8('sizeofSelect'), 'pcrSelect');
    const pcrs: number[] = [];
    bitmap.forEach((byte, i8) => {
      for (let bit = 0; bit < 8; bit++) if (byte & (1 << bit)) pcrs.push(i8 * 8 + bit);
    });
    out.push({ hashAlg, pcrs });
  }
  return out;
}

/** Reads a `TPML_DIGEST` (Part 2 §10.9.2; at most 8 digests). */
export function readDigestList(r: TpmReader): Uint8Array[] {
  const count = r.u32('TPML_DIGEST.count');
  if (count > 8) throw new TpmProtocolError(`TPML_DIGEST count ${count} > 8`, r.offset - 4);
  return Array.from({ length: count }, () => r.tpm2b('TPM2B_DIGEST'));
}

/** Asymmetric signing scheme of a key or signature: `TPM_ALG_ECDSA`/`RSASSA`/... and its hash. */
export interface SigScheme {
  readonly alg: number;
  readonly hashAlg: number;
}

/** Fields shared by RSA and ECC `TPMT_PUBLIC` areas. */
interface PublicCommon {
  /** The `TPMT_PUBLIC` bytes exactly as the TPM returned them (the Name is computed over these). */
  readonly bytes: Uint8Array;
  readonly nameAlg: number;
  /** TPMA_OBJECT bits (Part 2 §8.3). */
  readonly attributes: number;
  readonly authPolicy: Uint8Array;
  /** The symmetric algorithm of a storage key (an EK's AES-128-CFB), or null for TPM_ALG_NULL. */
  readonly symmetric: SymmetricDef | null;
  /** The key's signing scheme, or null for TPM_ALG_NULL. */
  readonly scheme: SigScheme | null;
}

/** A parsed `TPMT_PUBLIC` (Part 2 §12.2.4) of an RSA or ECC key. */
export type TpmPublic =
  | (PublicCommon & { readonly type: 'rsa'; readonly keyBits: number; readonly exponent: number; readonly modulus: Uint8Array })
  | (PublicCommon & { readonly type: 'ecc'; readonly curve: number; readonly x: Uint8Array; readonly y: Uint8Array });

/** A `TPMT_SYM_DEF_OBJECT` other than TPM_ALG_NULL (Part 2 §11.1.7). */
export interface SymmetricDef {
  /** TPM_ALG_AES, ... */
  readonly alg: number;
  readonly keyBits: number;
  /** TPM_ALG_CFB, ... */
  readonly mode: number;
}

/** Reads a `TPMT_SYM_DEF_OBJECT` (Part 2 §11.1.7). */
function readSymDef(r: TpmReader): SymmetricDef | null {
  const alg = r.u16('symmetric.algorithm');
  if (alg === TPM_ALG.NULL) return null;
  return { alg, keyBits: r.u16('symmetric.keyBits'), mode: r.u16('symmetric.mode') };
}

/** Reads a `TPMT_RSA_SCHEME`/`TPMT_ECC_SCHEME`/`TPMT_SIG_SCHEME` (Part 2 §11.2.4-11.2.5). */
function readScheme(r: TpmReader): SigScheme | null {
  const alg = r.u16('scheme');
  if (alg === TPM_ALG.NULL || alg === TPM_ALG.RSAES) return null; // RSAES has no details
  const hashAlg = r.u16('scheme.hashAlg');
  if (alg === TPM_ALG.ECDAA) r.u16('scheme.count'); // ECDAA also carries a count
  return { alg, hashAlg };
}

/** Parses a `TPMT_PUBLIC` (Part 2 §12.2.4) of an RSA or ECC key; `r` must hold exactly that area. */
export function readPublic(r: TpmReader): TpmPublic {
  const start = r.offset;
  const type = r.u16('TPMT_PUBLIC.type');
  const nameAlg = r.u16('nameAlg');
  const attributes = r.u32('objectAttributes');
  const authPolicy = r.tpm2b('authPolicy');
  const symmetric = readSymDef(r);
  const scheme = readScheme(r);
  const common = { nameAlg, attributes, authPolicy, symmetric, scheme };
  if (type === TPM_ALG.RSA) {
    const keyBits = r.u16('keyBits');
    const exponent = r.u32('exponent');
    const modulus = r.tpm2b('unique.rsa');
    return { ...common, type: 'rsa', keyBits, exponent, modulus, bytes: r.since(start) };
  }
  if (type === TPM_ALG.ECC) {
    const curve = r.u16('curveID');
    if (r.u16('kdf') !== TPM_ALG.NULL) r.u16('kdf.hashAlg');
    const x = r.tpm2b('unique.ecc.x');
    const y = r.tpm2b('unique.ecc.y');
    return { ...common, type: 'ecc', curve, x, y, bytes: r.since(start) };
  }
  throw new TpmProtocolError(`unsupported public key type 0x${type.toString(16)}`, start);
}

/** Parses `TPM2B_PUBLIC` bytes (u16 size | TPMT_PUBLIC); the size must cover the area exactly. */
export function parseTpm2bPublic(bytes: Uint8Array): TpmPublic {
  const r = new TpmReader(bytes);
  const inner = r.sub(r.u16('TPM2B_PUBLIC.size'), 'TPMT_PUBLIC');
  r.expectEnd('TPM2B_PUBLIC');
  const pub = readPublic(inner);
  inner.expectEnd('TPMT_PUBLIC');
  return pub;
}

/** Key algorithm of an attestation key this client creates. */
export type AkAlgorithm = 'ecc' | 'rsa';

/**
 * TPMA_OBJECT of an attestation key: fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth |
 * noDA | restricted | sign = 0x00050472 (Part 2 §8.3; docs/tpm.md#the-attestation-key, the shape tpm2_createak makes).
 */
export const AK_ATTRIBUTES = 0x00050472;

/**
 * Writes the `TPMT_PUBLIC` template of a restricted signing key: ECC NIST P-256 with ECDSA-SHA256,
 * or RSA-2048 with RSASSA-SHA256 (docs/tpm.md#the-attestation-key, byte-checked against tpm2_createprimary).
 * The `unique` fields are empty, so a primary from this template is the same key on every call.
 */
export function writeAkTemplate(w: TpmWriter, alg: AkAlgorithm): void {
  w.u16(alg === 'ecc' ? TPM_ALG.ECC : TPM_ALG.RSA).u16(TPM_ALG.SHA256).u32(AK_ATTRIBUTES).tpm2b(new Uint8Array(0));
  w.u16(TPM_ALG.NULL); // symmetric: none (a signing key)
  if (alg === 'ecc') {
    w.u16(TPM_ALG.ECDSA).u16(TPM_ALG.SHA256).u16(TPM_ECC.NIST_P256).u16(TPM_ALG.NULL);
    w.u16(0).u16(0); // unique: empty x, y
  } else {
    w.u16(TPM_ALG.RSASSA).u16(TPM_ALG.SHA256).u16(2048).u32(0); // exponent 0 = 65537
    w.u16(0); // unique: empty n
  }
}

/** A parsed `TPMT_SIGNATURE` (Part 2 §11.3.4). */
export type TpmSignature =
  | { readonly sigAlg: 'ecdsa'; readonly hashAlg: number; readonly r: Uint8Array; readonly s: Uint8Array }
  | { readonly sigAlg: 'rsassa' | 'rsapss'; readonly hashAlg: number; readonly sig: Uint8Array };

/** Reads a `TPMT_SIGNATURE` of the schemes this client uses: ECDSA, RSASSA, RSAPSS. */
export function readSignature(r: TpmReader): TpmSignature {
  const at = r.offset;
  const alg = r.u16('TPMT_SIGNATURE.sigAlg');
  if (alg === TPM_ALG.ECDSA) {
    const hashAlg = r.u16('signature.hash');
    return { sigAlg: 'ecdsa', hashAlg, r: r.tpm2b('signatureR'), s: r.tpm2b('signatureS') };
  }
  if (alg === TPM_ALG.RSASSA || alg === TPM_ALG.RSAPSS) {
    const hashAlg = r.u16('signature.hash');
    return { sigAlg: alg === TPM_ALG.RSASSA ? 'rsassa' : 'rsapss', hashAlg, sig: r.tpm2b('signature.sig') };
  }
  throw new TpmProtocolError(`unsupported signature algorithm 0x${alg.toString(16)}`, at);
}

/** TPM_GENERATED_VALUE: every TPMS_ATTEST starts with it (Part 2 §6.2). */
export const TPM_GENERATED_VALUE = 0xff544347;

/** `TPMS_CLOCK_INFO` (Part 2 §10.11.1). */
export interface ClockInfo {
  /** Milliseconds the TPM has been powered, u64. */
  readonly clock: bigint;
  readonly resetCount: number;
  readonly restartCount: number;
  readonly safe: boolean;
}

/** A parsed quote `TPMS_ATTEST` (Part 2 §10.12.12) with its `TPMS_QUOTE_INFO` (§10.12.4). */
export interface QuoteAttest {
  readonly magic: number;
  readonly type: number;
  /** TPM2B_NAME of the signing key, qualified by its hierarchy. */
  readonly qualifiedSigner: Uint8Array;
  /** The caller's qualifyingData: the nonce. */
  readonly extraData: Uint8Array;
  readonly clockInfo: ClockInfo;
  /** Vendor-defined, u64 (obfuscated for keys outside the endorsement hierarchy). */
  readonly firmwareVersion: bigint;
  /** The quoted PCRs. */
  readonly pcrSelections: readonly PcrSelection[];
  /** H_sign(concatenation of the selected PCR values, in selection order). */
  readonly pcrDigest: Uint8Array;
}

/**
 * Parses quote `TPMS_ATTEST` bytes. Throws `TpmProtocolError` unless the bytes are exactly one
 * TPMS_ATTEST with magic TPM_GENERATED_VALUE and type TPM_ST_ATTEST_QUOTE.
 */
export function parseQuoteAttest(bytes: Uint8Array): QuoteAttest {
  const r = new TpmReader(bytes);
  const magic = r.u32('magic');
  if (magic !== TPM_GENERATED_VALUE) throw new TpmProtocolError(`magic 0x${magic.toString(16)} is not TPM_GENERATED_VALUE`, 0);
  const type = r.u16('type');
  if (type !== TPM_ST.ATTEST_QUOTE) throw new TpmProtocolError(`attestation type 0x${type.toString(16)} is not a quote`, 4);
  const qualifiedSigner = r.tpm2b('qualifiedSigner');
  const extraData = r.tpm2b('extraData');
  const clockInfo: ClockInfo = {
    clock: r.u64('clock'),
    resetCount: r.u32('resetCount'),
    restartCount: r.u32('restartCount'),
    safe: r.u8('safe') !== 0,
  };
  const firmwareVersion = r.u64('firmwareVersion');
  const pcrSelections = readPcrSelections(r);
  const pcrDigest = r.tpm2b('pcrDigest');
  r.expectEnd('TPMS_ATTEST');
  return { magic, type, qualifiedSigner, extraData, clockInfo, firmwareVersion, pcrSelections, pcrDigest };
}
