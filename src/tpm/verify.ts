/**
 * Offline quote verification: pure functions over bytes and `node:crypto`, no TPM needed.
 *
 * Trust: a quote proves the PCR values only if `akPublic` is a key the verifier already trusts
 * (enrolled out of band, or bound to an EK certificate); nothing here establishes that.
 */
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { bytesEqual } from '../base/bytes.js';
import { ImakeepError } from '../errors.js';
import { BANK_ALG, TPM_ECC, bankOfAlg } from './constants.js';
import { TpmProtocolError } from './errors.js';
import { TpmReader } from './marshal.js';
import {
  type PcrSelection,
  type PcrValue,
  type QuoteAttest,
  type TpmPublic,
  type TpmSignature,
  parseQuoteAttest,
  parseTpm2bPublic,
  readSignature,
} from './structures.js';

/** Why a quote was rejected. */
export type QuoteVerifyCode =
  | 'QUOTE_BAD_ATTEST'
  | 'QUOTE_BAD_SIGNATURE'
  | 'QUOTE_NONCE_MISMATCH'
  | 'QUOTE_PCR_SELECTION_MISMATCH'
  | 'QUOTE_PCR_DIGEST_MISMATCH';

/**
 * A quote failed verification. `code`: `QUOTE_BAD_ATTEST` (not a quote TPMS_ATTEST: magic, type
 * or layout), `QUOTE_BAD_SIGNATURE` (malformed, wrong scheme, or does not verify with the AK),
 * `QUOTE_NONCE_MISMATCH`, `QUOTE_PCR_SELECTION_MISMATCH` (quoted PCRs differ from the PCR values
 * given), `QUOTE_PCR_DIGEST_MISMATCH` (PCR values do not hash to the quoted pcrDigest).
 */
export class QuoteVerifyError extends ImakeepError {
  constructor(code: QuoteVerifyCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/** Byte-wise equality (the quote's values are public: no constant-time compare needed). */

/** Node hash name of a TPM hash algorithm (the same names as the PCR banks). */
function hashName(alg: number): string {
  const bank = bankOfAlg(alg);
  if (bank === undefined) throw new TpmProtocolError(`unsupported hash algorithm 0x${alg.toString(16)}`);
  return bank;
}

/**
 * The pcrDigest a quote over `selections` must carry: H(values in selection order), with `hashAlg`
 * the signing scheme's hash (Part 3 §18.4.1). Undefined if a selected PCR has no value in `values`.
 */
export function computePcrDigest(
  selections: readonly PcrSelection[],
  values: readonly PcrValue[],
  hashAlg: number,
): Uint8Array | undefined {
  const byKey = new Map(values.map((v) => [`${BANK_ALG[v.bank]}:${v.pcr}`, v.value]));
  const h = createHash(hashName(hashAlg));
  for (const { hashAlg: bankAlg, pcrs } of selections) {
    for (const pcr of pcrs) {
      const value = byKey.get(`${bankAlg}:${pcr}`);
      if (value === undefined) return undefined;
      h.update(value);
    }
  }
  return new Uint8Array(h.digest());
}

/** Curve names for JWK, by TPM_ECC_CURVE. */
const JWK_CURVE: Readonly<Record<number, { crv: string; size: number }>> = {
  [TPM_ECC.NIST_P256]: { crv: 'P-256', size: 32 },
  [TPM_ECC.NIST_P384]: { crv: 'P-384', size: 48 },
};

/** Left-pads a big-endian integer to `size` bytes (TPMs drop leading zero bytes of r, s, x, y). */
function leftPad(b: Uint8Array, size: number): Buffer {
  if (b.length >= size) return Buffer.from(b.subarray(b.length - size));
  return Buffer.concat([Buffer.alloc(size - b.length), b]);
}

const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');

/** The public key of a parsed `TPMT_PUBLIC` as a `node:crypto` KeyObject (via JWK). */
export function publicKeyFromTpmPublic(pub: TpmPublic): KeyObject {
  if (pub.type === 'rsa') {
    const e = pub.exponent === 0 ? 65537 : pub.exponent; // 0 means the default, 2^16 + 1 (Part 2 §12.2.3.5)
    const eBytes = Buffer.alloc(4);
    eBytes.writeUInt32BE(e);
    let start = 0;
    while (start < 3 && eBytes[start] === 0) start++;
    return createPublicKey({ format: 'jwk', key: { kty: 'RSA', n: b64u(pub.modulus), e: b64u(eBytes.subarray(start)) } });
  }
  const curve = JWK_CURVE[pub.curve];
  if (curve === undefined) throw new TpmProtocolError(`unsupported ECC curve 0x${pub.curve.toString(16)}`);
  return createPublicKey({
    format: 'jwk',
    key: { kty: 'EC', crv: curve.crv, x: b64u(leftPad(pub.x, curve.size)), y: b64u(leftPad(pub.y, curve.size)) },
  });
}

/** The public key in `TPM2B_PUBLIC` bytes as a KeyObject. Export with `.export({ type: 'spki', format: 'pem' })` or `{ format: 'jwk' }`. */
export function publicKeyFromTpm2b(tpm2bPublic: Uint8Array): KeyObject {
  return publicKeyFromTpmPublic(parseTpm2bPublic(tpm2bPublic));
}

/** The TPM Name of an object: nameAlg (u16) ‖ H_nameAlg(TPMT_PUBLIC bytes) (Part 1 §16). */
export function tpmName(pub: TpmPublic): Uint8Array {
  const alg = Buffer.alloc(2);
  alg.writeUInt16BE(pub.nameAlg);
  return new Uint8Array(Buffer.concat([alg, createHash(hashName(pub.nameAlg)).update(pub.bytes).digest()]));
}

/** Parses a `TPMT_SIGNATURE` (exactly those bytes). */
export function parseSignature(bytes: Uint8Array): TpmSignature {
  const r = new TpmReader(bytes);
  const sig = readSignature(r);
  r.expectEnd('TPMT_SIGNATURE');
  return sig;
}

/** Checks `signature` over `attest` with `key`: ECDSA (r‖s, IEEE P1363) or RSASSA-PKCS1-v1_5. */
function signatureValid(attest: Uint8Array, sig: TpmSignature, key: KeyObject): boolean {
  const hash = hashName(sig.hashAlg);
  if (sig.sigAlg === 'ecdsa') {
    if (key.asymmetricKeyType !== 'ec') return false;
    const size = key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 48 : 32;
    const rs = Buffer.concat([leftPad(sig.r, size), leftPad(sig.s, size)]);
    return cryptoVerify(hash, attest, { key, dsaEncoding: 'ieee-p1363' }, rs);
  }
  if (key.asymmetricKeyType !== 'rsa') return false;
  if (sig.sigAlg === 'rsapss') return false; // not a scheme this SDK creates; reject rather than guess the salt
  return cryptoVerify(hash, attest, key, sig.sig);
}

/** Input of `verifyQuote`. */
export interface VerifyQuoteInput {
  /** `TPMS_ATTEST` bytes exactly as the TPM returned them. */
  readonly attest: Uint8Array;
  /** `TPMT_SIGNATURE` bytes. */
  readonly signature: Uint8Array;
  /** The trusted AK public key (see `publicKeyFromTpm2b`, or `createPublicKey(pem)`). */
  readonly akPublic: KeyObject;
  /** The nonce the verifier sent. */
  readonly nonce: Uint8Array;
  /** The PCR values claimed; their set must equal the quoted selection exactly. */
  readonly pcrs: readonly PcrValue[];
}

/**
 * Verifies a quote: parse, signature, nonce, PCR selection, PCR digest, in that order, each
 * failure its own `QuoteVerifyError` code. Returns the parsed attestation. Clock and counters are
 * returned, not judged: that is the caller's policy.
 * @example
 * ```ts
 * verifyQuote({ attest: q.attest, signature: q.signature, akPublic: publicKeyFromTpm2b(q.akPublic), nonce, pcrs: q.pcrs });
 * ```
 * @throws {QUOTE_BAD_ATTEST} the attest is not a TPMS_ATTEST of a quote
 * @throws {QUOTE_BAD_SIGNATURE} the signature does not verify with `akPublic`
 * @throws {QUOTE_NONCE_MISMATCH} the quote's qualifying data is not `nonce`
 * @throws {QUOTE_PCR_SELECTION_MISMATCH} the quoted PCRs are not those of `pcrs`
 * @throws {QUOTE_PCR_DIGEST_MISMATCH} `pcrs` do not hash to the quoted digest
 */
export function verifyQuote(input: VerifyQuoteInput): QuoteAttest {
  let attest: QuoteAttest;
  try {
    attest = parseQuoteAttest(input.attest);
  } catch (err) {
    throw new QuoteVerifyError('QUOTE_BAD_ATTEST', `attest: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  let sig: TpmSignature;
  let valid: boolean;
  try {
    sig = parseSignature(input.signature);
    valid = signatureValid(input.attest, sig, input.akPublic);
  } catch (err) {
    throw new QuoteVerifyError('QUOTE_BAD_SIGNATURE', `signature: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (!valid) throw new QuoteVerifyError('QUOTE_BAD_SIGNATURE', 'signature does not verify over the attest bytes with the AK');
  if (!bytesEqual(attest.extraData, input.nonce)) {
    throw new QuoteVerifyError('QUOTE_NONCE_MISMATCH', `quote nonce ${toHex(attest.extraData)}, expected ${toHex(input.nonce)}`);
  }
  // The same set of PCRs, in any order, each once; the quote's own order decides the digest.
  const quoted = attest.pcrSelections.filter((s) => s.pcrs.length > 0);
  const quotedKeys = quoted.flatMap((s) => s.pcrs.map((pcr) => `${s.hashAlg}:${pcr}`)).sort();
  const claimedKeys = input.pcrs.map((v) => `${BANK_ALG[v.bank]}:${v.pcr}`).sort();
  if (quotedKeys.join() !== claimedKeys.join()) {
    const describe = (sels: readonly PcrSelection[]): string =>
      sels.map((s) => `${bankOfAlg(s.hashAlg) ?? `0x${s.hashAlg.toString(16)}`}:${s.pcrs.join(',')}`).join('+');
    const given = input.pcrs.map((v) => `${v.bank}:${v.pcr}`).join(',');
    throw new QuoteVerifyError('QUOTE_PCR_SELECTION_MISMATCH', `quote covers ${describe(quoted)}, PCR values given for ${given}`);
  }
  const digest = computePcrDigest(quoted, input.pcrs, sig.hashAlg);
  if (digest === undefined || !bytesEqual(digest, attest.pcrDigest)) {
    throw new QuoteVerifyError(
      'QUOTE_PCR_DIGEST_MISMATCH',
      `PCR values hash to ${digest === undefined ? '?' : toHex(digest)}, quote says ${toHex(attest.pcrDigest)}`,
    );
  }
  return attest;
}
