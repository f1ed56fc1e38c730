/**
 * The append frame of the FUSE daemon (format in securityfs.c's header comment): a record with
 * every view the daemon serves, encoded here by src/ima (the one codec), and its modeled kernel
 * memory (src/kernel/kmem.ts).
 */
import { encodeBinaryRecord, formatAsciiLineBytes, isViolation, type BankMode, type BankName, type ImaRecord } from '../../src/ima/index.js';
import { recordKmem } from '../../src/kernel/index.js';

/** How the emulated kernel shows its banks. */
export interface FrameLayout {
  /** Banks with list files, sha1 first (the `_sha1` files exist even without a SHA-1 bank, docs/ima-formats.md#per-bank-lists). */
  readonly fileBanks: readonly BankName[];
  /** `padded` for a bank the kernel cannot hash (docs/ima-formats.md#bank-modes). */
  readonly modes: Readonly<Partial<Record<BankName, BankMode>>>;
  /** Digest slots per record in the kernel (TPM banks + extra slots, docs/kernel.md#kernel-memory-per-record). */
  readonly digestSlots: number;
}

const FRAME_HEADER = 16;

/** One frame: `u32 len | flags | kmem data | kmem entry | (u32 len | view)*`. */
export function encodeFrame(rec: ImaRecord, layout: FrameLayout): Uint8Array {
  const views: Uint8Array[] = [];
  for (const bank of layout.fileBanks) {
    const opts = { bank, mode: layout.modes[bank] ?? 'native' };
    views.push(encodeBinaryRecord(rec, opts), formatAsciiLineBytes(rec, opts));
  }
  const size = FRAME_HEADER + views.reduce((s, v) => s + 4 + v.length, 0);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  const kmem = recordKmem(rec, layout.digestSlots);
  dv.setUint32(0, size - 4, true);
  out[4] = isViolation(rec) ? 1 : 0;
  dv.setUint32(8, kmem.data, true);
  dv.setUint32(12, kmem.entry, true);
  let at = FRAME_HEADER;
  for (const v of views) {
    dv.setUint32(at, v.length, true);
    out.set(v, at + 4);
    at += 4 + v.length;
  }
  return out;
}
