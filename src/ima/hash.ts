/**
 * Hashing for the codec and replay, and the small byte helpers everything in `ima/` shares.
 *
 * Hash choice (measured on the 2-core x86-64 development VM with SHA-NI, node 20.20): for the 40-300 byte inputs IMA hashes per record
 * (template data, PCR ‖ digest), node's one-shot `crypto.hash()` does 1.35-1.56 M hashes/s against
 * 0.94-1.0 M for `createHash().update().digest()` and 0.46-0.98 M for @noble/hashes, because
 * per-call overhead dominates; a SHA-256 bank replay runs at 504 k records/s with `crypto.hash`
 * against 326 k (`createHash`) and 297 k (noble) over a 1M-record list. So every hash here is one `crypto.hash()`
 * call over one contiguous buffer.
 *
 * Most of that per-call overhead is the output Buffer, which node allocates in C++: asking
 * `crypto.hash()` for a `latin1` string instead (one char per digest byte) and copying its chars
 * where they are needed measured 3.4-4.2 M hashes/s for 150 bytes against 1.0-1.4 M with
 * `'buffer'` output, and 5.6 M against 1.1-1.5 M for a 40-byte SHA-1 extend (node 20.20, 2 loaded
 * vCPUs, 2026-11-22, 1 M calls). A pure-JS one-block SHA-1 extend did 4.8-5.4 M/s and a SHA-256
 * extend 1.7-1.9 M/s: not better, so OpenSSL it stays. subarray views of a larger buffer cost ~15 %
 * (the view's allocation) and are still far cheaper than copying.
 */
import { hash } from 'node:crypto';
import { DIGEST_SIZE, type BankName } from './record.js';

/**
 * `crypto.hash()` with `latin1` output. Node takes any Buffer encoding there; @types/node lists
 * only `binary` (its alias), which node resolves through a slower lookup: `latin1` measured 5-10 %
 * more hashes/s (4.6-4.9 M against 4.2-4.6 M, 40-byte SHA-1).
 */
const hashLatin1 = hash as unknown as (algorithm: string, data: Uint8Array, outputEncoding: 'latin1') => string;

/** Byte order of the integers of a binary list (docs/ima-formats.md#byte-order: host order, LE if canonical). */
export type Endian = 'le' | 'be';

/** H_bank(data) as a new Uint8Array of the bank's digest size. */
export function bankHash(bank: BankName, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(DIGEST_SIZE[bank]);
  bankHashInto(bank, data, out, 0);
  return out;
}

/**
 * Writes H_bank(data) into `out[offset..offset + digest size)`. `data` may overlap `out` (the
 * digest is computed before it is written), so a PCR extend can hash `PCR ‖ digest` in place.
 */
export function bankHashInto(bank: BankName, data: Uint8Array, out: Uint8Array, offset: number): void {
  const digest = hashLatin1(bank, data, 'latin1');
  for (let i = 0; i < digest.length; i++) out[offset + i] = digest.charCodeAt(i);
}

/** True if H_bank(data) equals `expected[offset..offset + digest size)`. */
export function bankHashEquals(bank: BankName, data: Uint8Array, expected: Uint8Array, offset = 0): boolean {
  const digest = hashLatin1(bank, data, 'latin1');
  if (offset + digest.length > expected.length) return false;
  for (let i = 0; i < digest.length; i++) if (expected[offset + i] !== digest.charCodeAt(i)) return false;
  return true;
}

/** True if every byte is zero (an IMA violation's template digest, docs/ima-formats.md#violations). */
export function isAllZero(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** Lowercase hex, as the kernel prints digests (`%*phN`). */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('hex');
}

/** Parses lowercase/uppercase hex of even length; null if it is not hex. */
export function fromHex(text: string): Uint8Array | null {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return null;
  return new Uint8Array(Buffer.from(text, 'hex'));
}

/** Reads a u32 at `offset` in the given byte order. */
export function readU32(bytes: Uint8Array, offset: number, endian: Endian): number {
  const b0 = bytes[offset] as number;
  const b1 = bytes[offset + 1] as number;
  const b2 = bytes[offset + 2] as number;
  const b3 = bytes[offset + 3] as number;
  return endian === 'le'
    ? (b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)) >>> 0
    : ((b0 << 24) | (b1 << 16) | (b2 << 8) | b3) >>> 0;
}

/** Writes a u32 at `offset` in the given byte order. */
export function writeU32(bytes: Uint8Array, offset: number, value: number, endian: Endian): void {
  const v = value >>> 0;
  if (endian === 'le') {
    bytes[offset] = v & 0xff;
    bytes[offset + 1] = (v >>> 8) & 0xff;
    bytes[offset + 2] = (v >>> 16) & 0xff;
    bytes[offset + 3] = v >>> 24;
  } else {
    bytes[offset] = v >>> 24;
    bytes[offset + 1] = (v >>> 16) & 0xff;
    bytes[offset + 2] = (v >>> 8) & 0xff;
    bytes[offset + 3] = v & 0xff;
  }
}

/** Concatenates byte arrays into one new array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** `n` bytes of `fill`. */
export function filled(n: number, fill: number): Uint8Array {
  return new Uint8Array(n).fill(fill);
}

/** Bytes of a Latin-1 string (one byte per char): template names and kernel strings round-trip exactly. */
export function latin1Bytes(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'latin1'));
}

/** Latin-1 text of bytes (one char per byte), the inverse of {@link latin1Bytes}. */
export function latin1Text(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
}
