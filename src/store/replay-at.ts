/**
 * The PCR replay at an exact record index of a boot, from the replay state chunks store at their
 * ends (store schema: "the replay state of every bank at the chunk's end"): the collector matches
 * quotes from the last checkpoint on, and so does the HTTP API's Keylime quote.
 */
import { PcrReplay, type BankMode, type BankName } from '../ima/index.js';
import type { ImaStore, StoredChunk } from './store.js';

async function firstOf<T>(items: AsyncIterable<T>): Promise<T | undefined> {
  for await (const item of items) return item;
  return undefined;
}

/**
 * The replay of records 0..index-1 of a boot: from the stored state of the chunk boundary at or
 * before `index` (a chunk stores the state at its end), replaying at most one chunk's records.
 * `banks` are used only when that boundary is the boot's start.
 */
export async function replayAt(
  store: ImaStore,
  boot: number,
  index: number,
  banks: Readonly<Partial<Record<BankName, BankMode>>>,
): Promise<PcrReplay> {
  let base: StoredChunk | undefined;
  if (index > 0) {
    const holding = await firstOf(store.chunks(boot, index - 1));
    if (holding !== undefined) {
      const { firstIndex, count } = holding.chunk;
      if (firstIndex + count === index) return PcrReplay.fromState(holding.chunk.replay);
      if (firstIndex > 0) base = await firstOf(store.chunks(boot, firstIndex - 1));
    }
  }
  const replay = base === undefined ? new PcrReplay({ banks }) : PcrReplay.fromState(base.chunk.replay);
  if (replay.recordCount < index) {
    for await (const { record } of store.records(boot, replay.recordCount)) {
      replay.extend(record);
      if (replay.recordCount === index) break;
    }
  }
  if (replay.recordCount !== index) throw new RangeError(`record ${index} of boot ${boot} is past the stored records`);
  return replay;
}
