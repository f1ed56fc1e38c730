/**
 * Reads of a boot's stored records that the collector needs besides plain streaming: byte lengths
 * of record ranges (kernel list offsets), short record ranges (the replay state at an exact index
 * is the store's `replayAt`, which serve needs too).
 * Each streams chunk by chunk (Invariant 4): memory is one chunk whatever the range.
 */
import { BinaryListParser, type ImaRecord } from '../ima/index.js';
import { binaryRecordLength } from '../kernel/index.js';
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
  // The one binary codec walks the body (views, no copies); a chunk body is canonical LE.
  new BinaryListParser().pushEach(body, (rec) => {
    if (index >= from && index < to) bytes += binaryRecordLength(rec);
    index++;
  });
  return bytes;
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
