/**
 * Reads of a boot's stored records that the collector needs besides plain streaming: byte lengths
 * of record ranges (kernel list offsets), short record ranges (the replay state at an exact index
 * is the store's `replayAt`, which serve needs too).
 * Each streams chunk by chunk (Invariant 4): memory is one chunk whatever the range.
 */
import type { ImaRecord } from '../ima/index.js';
import type { ImaStore } from '../store/index.js';

/**
 * Bytes that stored records from..to-1 take in the kernel's SHA-1 binary list: the byte offset of
 * record `to` in a kernel list whose head is record `from`. A chunk's body is exactly those bytes
 * (canonical little-endian SHA-1 records, store schema), so whole chunks cost no parsing.
 */
export async function storedBytes(store: ImaStore, boot: number, from: number, to: number): Promise<number> {
  if (to <= from) return 0;
  let bytes = 0;
  for await (const { chunk } of store.chunks(boot, from)) {
    const end = chunk.firstIndex + chunk.count;
    if (chunk.firstIndex >= from && end <= to) bytes += chunk.records.length;
    else bytes += partialBytes(chunk.records, chunk.firstIndex, from, to);
    if (end >= to) return bytes;
  }
  throw new RangeError(`records ${from}..${to - 1} of boot ${boot} are not all stored`);
}

/** Bytes of records from..to-1 inside one chunk body starting at global index `first`. */
function partialBytes(body: Uint8Array, first: number, from: number, to: number): number {
  let index = first;
  let bytes = 0;
  for (const length of recordLengths(body)) {
    if (index >= from && index < to) bytes += length;
    index++;
  }
  return bytes;
}

/** Lengths of the records of a SHA-1 binary list body, walking the length fields only. */
function* recordLengths(body: Uint8Array): Generator<number> {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let at = 0;
  while (at < body.length) {
    // u32 pcr | digest[20] | u32 name_len | name | u32 data_len | data (kernel-ima.md §3.2); the
    // `ima` template has no data_len: d(20) | u32 len | name.
    const nameLen = view.getUint32(at + 24, true);
    const nameAt = at + 28;
    const isIma = nameLen === 3 && body[nameAt] === 0x69 && body[nameAt + 1] === 0x6d && body[nameAt + 2] === 0x61;
    const dataLen = isIma ? 24 + view.getUint32(nameAt + nameLen + 20, true) : 4 + view.getUint32(nameAt + nameLen, true);
    const length = 28 + nameLen + dataLen;
    yield length;
    at += length;
  }
}

/** Up to `max` stored records from global index `from` on. */
export async function storedRange(store: ImaStore, boot: number, from: number, max: number): Promise<ImaRecord[]> {
  const out: ImaRecord[] = [];
  if (max <= 0) return out;
  for await (const { record } of store.records(boot, from)) {
    out.push(record);
    if (out.length === max) break;
  }
  return out;
}
