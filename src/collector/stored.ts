/**
 * Reads of a boot's stored records that the collector needs besides plain streaming: byte lengths
 * of record ranges (kernel list offsets), short record ranges (the replay state at an exact index
 * is the store's `replayAt`, which serve needs too).
 * Each streams chunk by chunk (Invariant 4): memory is one chunk whatever the range.
 */
import { listByteOffset, type ImaRecord } from '../ima/index.js';
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
    else {
      // Offsets inside the chunk of records `from` and `to`, clamped to the chunk.
      const offsetOf = (index: number): number => listByteOffset(chunk.records, Math.min(Math.max(index - chunk.firstIndex, 0), chunk.count));
      bytes += offsetOf(to) - offsetOf(from);
    }
    if (end >= to) return bytes;
  }
  throw new RangeError(`records ${from}..${to - 1} of boot ${boot} are not all stored`);
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
