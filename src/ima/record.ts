/**
 * The measurement record as the kernel keeps it, and the PCR banks.
 *
 * A record is stored once, in the form of the kernel's SHA-1 binary list (design.md, store schema):
 * the per-bank digests are derived from the template data (docs/ima-formats.md#template-digest), so they are never
 * stored twice.
 */

export { BANKS, DIGEST_SIZE, type BankName } from '../base/banks.js';

/**
 * How the kernel extended a bank: `native` = H_bank(template data) (kernels >= 5.8, for banks whose
 * algorithm the kernel can hash), `padded` = the SHA-1 template digest zero-padded to the bank size
 * (banks the kernel cannot hash; all non-SHA-1 banks before 5.8). docs/ima-formats.md#bank-modes, #pcr-replay.
 */
export type BankMode = 'native' | 'padded';

/** One measurement record. */
export interface ImaRecord {
  /** PCR index the record was extended into (10 unless the policy says `pcr=`). */
  readonly pcr: number;
  /**
   * The SHA-1 template digest as the legacy binary list shows it (20 bytes); all zero for a
   * violation (what was extended is 0xFF..FF, docs/ima-formats.md#violations).
   */
  readonly digest: Uint8Array;
  /** Template name, e.g. `ima-ng`; unknown names are kept as they are. */
  readonly template: string;
  /**
   * Template data exactly as field 6 of the binary record (without its own u32 length). For the
   * `ima` template, which has no data-length field, the bytes `d (20) | u32 name_len | name`.
   */
  readonly data: Uint8Array;
}
