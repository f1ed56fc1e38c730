/**
 * Per-bank template digests and what the kernel extended (docs/ima-formats.md#template-digest, #pcr-replay).
 */
import { DIGEST_SIZE, type BankMode, type BankName, type ImaRecord } from './record.js';
import { ImaError } from './errors.js';
import { bankHash, concatBytes, filled, isAllZero, type Endian } from './hash.js';
import { IMA_NAME_MAX, IMA_TEMPLATE, splitTemplateData } from './template.js';

/** True for a violation record: its template digest is all zero (docs/ima-formats.md#violations). */
export function isViolation(rec: { readonly digest: Uint8Array }): boolean {
  return isAllZero(rec.digest);
}

/**
 * The bytes the kernel hashes into the template digest (`ima_calc_field_array_hash_tfm()`):
 * the template data as shown, except for the `ima` template, whose digest covers `d` and the name
 * zero-padded to 256 bytes, without lengths (docs/ima-formats.md#template-digest).
 */
export function templateHashInput(template: string, data: Uint8Array, endian: Endian = 'le', recordIndex?: number): Uint8Array {
  if (template !== IMA_TEMPLATE) return data;
  const fields = splitTemplateData(template, data, endian);
  const d = fields?.[0];
  const name = fields?.[1];
  if (fields === null || fields.length !== 2 || d === undefined || name === undefined || name.length > IMA_NAME_MAX) {
    throw new ImaError('IMA_BAD_TEMPLATE', `'ima' template data must be d(20) | u32 len | name(<= ${IMA_NAME_MAX})`, { recordIndex });
  }
  const input = new Uint8Array(d.length + IMA_NAME_MAX + 1);
  input.set(d, 0);
  input.set(name, d.length);
  return input;
}

/** H_bank over the template (not a violation's zero digest): what a bank's native digest is. */
export function computeTemplateDigest(
  rec: { readonly template: string; readonly data: Uint8Array },
  bank: BankName,
  endian: Endian = 'le',
): Uint8Array {
  return bankHash(bank, templateHashInput(rec.template, rec.data, endian));
}

/** The SHA-1 template digest zero-padded to the bank size: an unmapped bank's digest (docs/ima-formats.md#bank-modes). */
function padSha1(sha1Digest: Uint8Array, bank: BankName): Uint8Array {
  const out = new Uint8Array(DIGEST_SIZE[bank]);
  out.set(sha1Digest.subarray(0, Math.min(sha1Digest.length, out.length)));
  return out;
}

/**
 * The record's template digest as the list of `bank` shows it: the SHA-1 digest for the sha1
 * bank, H_bank(template) in `native` mode, the padded SHA-1 digest in `padded` mode, all zero for
 * a violation (docs/ima-formats.md#violations).
 */
export function templateDigest(rec: ImaRecord, bank: BankName = 'sha1', mode: BankMode = 'native', endian: Endian = 'le'): Uint8Array {
  const size = DIGEST_SIZE[bank];
  if (isViolation(rec)) return new Uint8Array(size);
  if (bank === 'sha1') return Uint8Array.from(rec.digest);
  return mode === 'padded' ? padSha1(rec.digest, bank) : computeTemplateDigest(rec, bank, endian);
}

/**
 * What the kernel extended into `bank` for this record: its template digest, or for a violation
 * 0xFF..FF, which for a padded bank is 0xFF x 20 followed by zeros (`ima_init_digests()`,
 * docs/ima-formats.md#violations, #bank-modes, #pcr-replay).
 */
export function extendedDigest(rec: ImaRecord, bank: BankName = 'sha1', mode: BankMode = 'native', endian: Endian = 'le'): Uint8Array {
  if (!isViolation(rec)) return templateDigest(rec, bank, mode, endian);
  const size = DIGEST_SIZE[bank];
  if (mode === 'native' || bank === 'sha1') return filled(size, 0xff);
  return concatBytes([filled(DIGEST_SIZE.sha1, 0xff), new Uint8Array(size - DIGEST_SIZE.sha1)]);
}

/**
 * The SHA-1 form of a record read from another bank's list (`binary_runtime_measurements_<bank>`):
 * same template data, SHA-1 template digest recomputed (zero for a violation).
 */
export function toSha1Record(
  rec: { readonly pcr: number; readonly digest: Uint8Array; readonly template: string; readonly data: Uint8Array },
  endian: Endian = 'le',
): ImaRecord {
  const digest = isViolation(rec) ? new Uint8Array(DIGEST_SIZE.sha1) : computeTemplateDigest(rec, 'sha1', endian);
  return { pcr: rec.pcr, digest, template: rec.template, data: rec.data };
}
