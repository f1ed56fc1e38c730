/**
 * The PCR file of `tpm2_quote -o` / `tpm2_checkquote -f` / `tpm2_pcrread -o`, which Keylime carries
 * as the third part of its quote string (rust-keylime `encode_quote_string`, docs/api.md#keylime-quote). tpm2-tools writes its in-memory C structs
 * as they are (tpm2-tools `lib/pcr.c`, `pcr_fwrite_serialized`), so this is NOT TPM wire format:
 * little-endian on x86/arm, with the compiler's padding, fixed-size arrays:
 *
 *   TPML_PCR_SELECTION   u32 count | 16 × TPMS_PCR_SELECTION { u16 hash | u8 sizeofSelect | u8 pcrSelect[4] | pad 1 }  = 132 bytes
 *   u32 digestListCount
 *   digestListCount × TPML_DIGEST { u32 count | 8 × TPM2B_DIGEST { u16 size | u8 buffer[64] } }                  = 532 bytes each
 *
 * Digests follow the selection order, 8 per TPML_DIGEST. Layout checked byte for byte against a
 * file tpm2_quote 5.4 wrote here (668 bytes for 3 PCRs).
 */
import { ImakeepError } from '../errors.js';
import { DIGEST_SIZE } from '../base/banks.js';
import { type PcrRef, type PcrSelection, type PcrValue, refsOf, selectionOf } from './structures.js';

/** A PCR file that does not have tpm2-tools' layout. Code `TPM_BAD_PCR_BLOB`. */
export class PcrBlobError extends ImakeepError {
  /** Byte offset of the problem. */
  readonly offset: number;

  constructor(message: string, offset: number) {
    super('TPM_BAD_PCR_BLOB', `${message} (at byte ${offset})`);
    this.offset = offset;
  }
}

/** TPM2_NUM_PCR_BANKS in tpm2-tss `tss2_tpm2_types.h`. */
const NUM_PCR_BANKS = 16;
/** TPM2_PCR_SELECT_MAX: bitmap bytes per TPMS_PCR_SELECTION. */
const PCR_SELECT_MAX = 4;
/** sizeof(TPMS_PCR_SELECTION): 2 + 1 + 4, padded to the u16 alignment. */
const SELECTION_SIZE = 8;
const SELECTION_LIST_SIZE = 4 + NUM_PCR_BANKS * SELECTION_SIZE;
/** sizeof(TPMU_HA): the largest digest (SHA-512). */
const DIGEST_BUFFER = 64;
const DIGESTS_PER_LIST = 8;
/** sizeof(TPML_DIGEST). */
const DIGEST_LIST_SIZE = 4 + DIGESTS_PER_LIST * (2 + DIGEST_BUFFER);

/**
 * Encodes PCR values as tpm2-tools' PCR file. Values are written in TPM order (bank by first
 * appearance, PCR ascending), the order a quote over the same PCRs hashes them in.
 */
export function encodePcrBlob(values: readonly PcrValue[]): Uint8Array {
  const selections = selectionOf(values);
  if (selections.length > NUM_PCR_BANKS) throw new RangeError(`more than ${NUM_PCR_BANKS} banks`);
  const byKey = new Map(values.map((v) => [`${v.bank}:${v.pcr}`, v.value]));
  const ordered = refsOf(selections).map((ref) => byKey.get(`${ref.bank}:${ref.pcr}`) ?? new Uint8Array(0));
  const lists = Math.ceil(ordered.length / DIGESTS_PER_LIST);
  const out = new Uint8Array(SELECTION_LIST_SIZE + 4 + lists * DIGEST_LIST_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(0, selections.length, true);
  selections.forEach(({ hashAlg, pcrs }, i) => {
    const at = 4 + i * SELECTION_SIZE;
    view.setUint16(at, hashAlg, true);
    view.setUint8(at + 2, 3);
    for (const p of pcrs) {
      if (p >= PCR_SELECT_MAX * 8) throw new RangeError(`PCR ${p} does not fit tpm2-tools' 32-PCR bitmap`);
      out[at + 3 + (p >> 3)] |= 1 << (p & 7);
    }
  });
  view.setUint32(SELECTION_LIST_SIZE, lists, true);
  ordered.forEach((digest, i) => {
    const list = SELECTION_LIST_SIZE + 4 + Math.floor(i / DIGESTS_PER_LIST) * DIGEST_LIST_SIZE;
    const slot = list + 4 + (i % DIGESTS_PER_LIST) * (2 + DIGEST_BUFFER);
    view.setUint32(list, Math.min(DIGESTS_PER_LIST, ordered.length - Math.floor(i / DIGESTS_PER_LIST) * DIGESTS_PER_LIST), true);
    view.setUint16(slot, digest.length, true);
    out.set(digest, slot + 2);
  });
  return out;
}

/** A decoded PCR file: the selection and the values in its order. */
export interface PcrBlob {
  readonly selections: readonly PcrSelection[];
  readonly values: readonly PcrValue[];
}

/** Decodes tpm2-tools' PCR file; throws `PcrBlobError` unless sizes, counts and lengths all agree. */
export function decodePcrBlob(blob: Uint8Array): PcrBlob {
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  if (blob.length < SELECTION_LIST_SIZE + 4) throw new PcrBlobError(`${blob.length} bytes is too short for a PCR file`, 0);
  const count = view.getUint32(0, true);
  if (count > NUM_PCR_BANKS) throw new PcrBlobError(`selection count ${count} > ${NUM_PCR_BANKS}`, 0);
  const selections: PcrSelection[] = [];
  for (let i = 0; i < count; i++) {
    const at = 4 + i * SELECTION_SIZE;
    const size = view.getUint8(at + 2);
    if (size > PCR_SELECT_MAX) throw new PcrBlobError(`sizeofSelect ${size} > ${PCR_SELECT_MAX}`, at + 2);
    const pcrs: number[] = [];
    for (let p = 0; p < size * 8; p++) if (blob[at + 3 + (p >> 3)] & (1 << (p & 7))) pcrs.push(p);
    selections.push({ hashAlg: view.getUint16(at, true), pcrs });
  }
  const lists = view.getUint32(SELECTION_LIST_SIZE, true);
  const expectedLength = SELECTION_LIST_SIZE + 4 + lists * DIGEST_LIST_SIZE;
  if (blob.length !== expectedLength) {
    throw new PcrBlobError(`${lists} digest lists need ${expectedLength} bytes, file has ${blob.length}`, SELECTION_LIST_SIZE);
  }
  const digests: Uint8Array[] = [];
  for (let l = 0; l < lists; l++) {
    const list = SELECTION_LIST_SIZE + 4 + l * DIGEST_LIST_SIZE;
    const n = view.getUint32(list, true);
    if (n > DIGESTS_PER_LIST) throw new PcrBlobError(`digest list count ${n} > ${DIGESTS_PER_LIST}`, list);
    for (let i = 0; i < n; i++) {
      const slot = list + 4 + i * (2 + DIGEST_BUFFER);
      const size = view.getUint16(slot, true);
      if (size > DIGEST_BUFFER) throw new PcrBlobError(`digest size ${size} > ${DIGEST_BUFFER}`, slot);
      digests.push(blob.slice(slot + 2, slot + 2 + size));
    }
  }
  let refs: PcrRef[];
  try {
    refs = refsOf(selections);
  } catch (err) {
    throw new PcrBlobError(err instanceof Error ? err.message : String(err), 4);
  }
  if (refs.length !== digests.length) {
    throw new PcrBlobError(`selection names ${refs.length} PCRs but the file holds ${digests.length} digests`, SELECTION_LIST_SIZE);
  }
  const values = refs.map((ref, i) => ({ ...ref, value: digests[i] ?? new Uint8Array(0) }));
  for (const v of values) {
    if (v.value.length !== DIGEST_SIZE[v.bank]) throw new PcrBlobError(`${v.bank}:${v.pcr} digest has ${v.value.length} bytes`, SELECTION_LIST_SIZE);
  }
  return { selections, values };
}
