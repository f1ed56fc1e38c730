/**
 * A model of the kernel memory the IMA measurement list holds (docs/kernel.md#kernel-memory-per-record, #what-removal-frees), for the
 * emulator's `kmem` counter and the collector's memory threshold.
 *
 * x86_64 SLUB arithmetic, calibrated on a real kernel: Debian 6.1.192 under QEMU with swtpm
 * (banks sha1 + sha256, ima-ng, sha256 file hashes), `/proc/slabinfo` kmalloc-* objects before and
 * after 5,000 new measurements (`hw/qemu`, `hw/qemu/CALIBRATION.md`) measured 399.2-400.8 B per
 * record with 12-byte paths and 447.4-449.0 B with 53-byte paths; this model gives 400 and 448
 * (64 + 64 + 192 entry, 64 + kmalloc(path + 1) data), so it needs no correction for that set-up.
 * Not modeled, on purpose (not list memory, freed by no removal): the per-inode state IMA keeps for
 * each measured file, 192 B (iint_cache 128 + cached file hash in kmalloc-64). Still to measure:
 * what a 7.2 kernel frees on `N` and `D` (docs/kernel.md#kernel-memory-per-record; rerun `hw/qemu` with a 7.2 kernel package).
 * Sassu's ~260 B/record (same section) is below even the 320 B that stay after deletion here.
 */
import type { ImaRecord } from '../ima/record.js';
import { splitTemplateData } from '../ima/template.js';

/** Kernel-side sizes the model uses (x86_64 defaults from docs/kernel.md#kernel-memory-per-record). */
export interface KmemModel {
  /** sizeof(struct ima_queue_entry): hlist_node + list_head + pointer = 40. */
  readonly queueEntry: number;
  /** sizeof(struct ima_template_entry) without its flexible array = 32. */
  readonly templateEntry: number;
  /** sizeof(struct ima_field_data) = 16 (pointer + u32, padded). */
  readonly fieldData: number;
  /** sizeof(struct tpm_digest) = 66 (u16 alg + 64, packed). */
  readonly tpmDigest: number;
  /** The hash table: 1024 buckets x 8 bytes (docs/kernel.md#what-removal-frees). */
  readonly hashTable: number;
}

/** The x86_64 model of docs/kernel.md#kernel-memory-per-record. */
export const X86_64_KMEM: KmemModel = {
  queueEntry: 40,
  templateEntry: 32,
  fieldData: 16,
  tpmDigest: 66,
  hashTable: 8192,
};

/** A record's slab bytes, split by what a deletion frees. */
export interface RecordKmem {
  /** Template field data: freed by every deletion (`D` and `N`). */
  readonly data: number;
  /** Queue entry, template entry and digest array: freed only by `D` with `ima_flush_htable` (docs/kernel.md#what-removal-frees). */
  readonly entry: number;
}

/** kmalloc size classes of SLUB on x86_64 (bytes); above the largest, whole pages (order-n). */
const KMALLOC_CLASSES = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];
const PAGE = 4096;

/** Bytes kmalloc(size) takes from the slab: its size class (0 for a zero-size request, ZERO_SIZE_PTR). */
export function kmallocSize(size: number): number {
  if (size <= 0) return 0;
  const cls = KMALLOC_CLASSES.find((c) => c >= size);
  if (cls !== undefined) return cls;
  let pages = 1;
  while (pages * PAGE < size) pages *= 2;
  return pages * PAGE;
}

/**
 * Slab bytes of one record. `digestSlots` = TPM banks + `ima_extra_slots` (one more for SHA-1 when
 * the TPM has no SHA-1 bank, one for `ima_hash_algo` when it has no such bank; `ima_init_crypto()`, ima_crypto.c).
 */
export function recordKmem(rec: ImaRecord, digestSlots: number, model: KmemModel = X86_64_KMEM): RecordKmem {
  const fields = splitTemplateData(rec.template, rec.data, 'le') ?? [rec.data];
  const data = fields.reduce((sum, f) => sum + kmallocSize(f.length), 0);
  const entry =
    kmallocSize(model.queueEntry) +
    kmallocSize(model.templateEntry + fields.length * model.fieldData) +
    kmallocSize(digestSlots * model.tpmDigest);
  return { data, entry };
}
