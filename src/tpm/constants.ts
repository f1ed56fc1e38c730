/**
 * TPM 2.0 constants this client uses (TPM 2.0 Library Part 2 §6: TPM_ST, TPM_CC, TPM_RH, TPM_CAP,
 * TPM_SU; TCG Algorithm Registry: TPM_ALG_ID, TPM_ECC_CURVE). Only what the commands here need.
 */
import { BANKS, type BankName } from '../base/banks.js';

/** Structure tags (Part 2 §6.9). */
export const TPM_ST = {
  NO_SESSIONS: 0x8001,
  SESSIONS: 0x8002,
  ATTEST_QUOTE: 0x8018,
} as const;

/** Command codes (Part 2 §6.5.2). */
export const TPM_CC = {
  CreatePrimary: 0x131,
  Startup: 0x144,
  FlushContext: 0x165,
  ReadPublic: 0x173,
  GetCapability: 0x17a,
  GetRandom: 0x17b,
  PCR_Read: 0x17e,
  PCR_Extend: 0x182,
  PCR_Reset: 0x13d,
  Quote: 0x158,
  ActivateCredential: 0x147,
  NV_Read: 0x14e,
  PolicySecret: 0x151,
  NV_ReadPublic: 0x169,
  PolicyOR: 0x171,
  StartAuthSession: 0x176,
  PolicyAuthorizeNV: 0x192,
} as const;

/** Permanent handles (Part 2 §7.4). */
export const TPM_RH = {
  OWNER: 0x40000001,
  /** The empty-password session handle. */
  PW: 0x40000009,
  ENDORSEMENT: 0x4000000b,
  /** No handle: an unsalted, unbound session's tpmKey and bind (Part 2 §7.4). */
  NULL: 0x40000007,
} as const;

/** Session types of TPM2_StartAuthSession (Part 2 §6.11). */
export const TPM_SE = {
  HMAC: 0x00,
  POLICY: 0x01,
} as const;

/** Properties read with TPM_CAP_TPM_PROPERTIES (Part 2 §6.13, PT_FIXED = 0x100). */
export const TPM_PT = {
  /** Largest buffer TPM2_NV_Read returns in one call. */
  NV_BUFFER_MAX: 0x100 + 44,
} as const;

/** First handle of the transient range (Part 2 §7.2, TPM_HT_TRANSIENT = 0x80). */
export const TRANSIENT_FIRST = 0x80000000;

/** Capability selectors (Part 2 §6.12). */
export const TPM_CAP = {
  HANDLES: 0x00000001,
  PCRS: 0x00000005,
  TPM_PROPERTIES: 0x00000006,
} as const;

/** Startup types (Part 2 §6.13). */
export const TPM_SU = {
  CLEAR: 0x0000,
  STATE: 0x0001,
} as const;

/** Algorithm identifiers (TCG Algorithm Registry, Part 2 §6.3). */
export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  AES: 0x0006,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  ECDSA: 0x0018,
  ECDAA: 0x001a,
  ECC: 0x0023,
  CFB: 0x0043,
} as const;

/** ECC curves (Part 2 §6.4). */
export const TPM_ECC = {
  NIST_P256: 0x0003,
  NIST_P384: 0x0004,
  NIST_P521: 0x0005,
} as const;

/** TPM_ALG_ID of each PCR bank. */
export const BANK_ALG: Readonly<Record<BankName, number>> = {
  sha1: TPM_ALG.SHA1,
  sha256: TPM_ALG.SHA256,
  sha384: TPM_ALG.SHA384,
  sha512: TPM_ALG.SHA512,
};

const ALG_BANK: ReadonlyMap<number, BankName> = new Map(BANKS.map((bank) => [BANK_ALG[bank], bank]));

/** The bank of a hash TPM_ALG_ID, or undefined for algorithms imakeep does not replay (SM3, ...). */
export function bankOfAlg(alg: number): BankName | undefined {
  return ALG_BANK.get(alg);
}
