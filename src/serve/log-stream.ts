/**
 * The whole log of a boot in the kernel's own formats, from any global index: the stored part,
 * chunk by chunk, then the part still in the kernel (design.md "Serving"; Invariants 2, 4, 6).
 *
 * Memory is one chunk (or one kernel batch) and its encoding, whatever the log's length: the
 * stream is an async generator, so a consumer that stops reading stops the store iteration too
 * (pull, not push). No lock is held while the consumer is slow: the store's iterator is a
 * LevelDB snapshot, and the kernel tail only reads between batches.
 */
import {
  AsciiListWriter,
  BANKS,
  BinaryListParser,
  concatBytes,
  convertTemplateData,
  encodeBinaryRecord,
  listByteOffset,
  type BankMode,
  type BankName,
  type ImaRecord,
} from '../ima/index.js';
import { checkChunkBody, chunkRecords, StoreError, type BootRecord, type ImaStore } from '../store/index.js';
import { ServeError } from './errors.js';
import type { KernelTail } from './sources.js';

/** Formats of the kernel's lists: `binary_runtime_measurements[_<bank>]`, `ascii_runtime_measurements[_<bank>]`. */
export type LogFormat = 'binary' | 'ascii';

/**
 * What the stored part is read from: the device's store, or anything that keeps chunks the same
 * way (the fleet keeps each device's chunks exactly as the device stored them).
 */
export type LogStore = Pick<ImaStore, 'currentBoot' | 'bootRecord' | 'storedCount' | 'chunks'>;

/** Where the log comes from: the store, and the kernel for the current boot's unstored records. */
export interface LogSource {
  readonly store: LogStore;
  /** Absent when serving without a running collector: the stored part only. */
  readonly tail?: KernelTail;
}

/** Which list, from where. */
export interface LogQuery {
  /** Store boot number; default the current (latest) boot. */
  readonly boot?: number;
  /** Global index of the first record; default 0. */
  readonly from?: number;
  /** Default `binary`. */
  readonly format?: LogFormat;
  /** Bank whose template digests the list shows; default `sha1` (the legacy lists). */
  readonly bank?: BankName;
}

/** Records with consecutive global indexes. */
export interface IndexedBatch {
  readonly firstIndex: number;
  /** Number of records. */
  readonly count: number;
  /** The records (a stored batch parses its list bytes when this is first read). */
  readonly records: readonly ImaRecord[];
  /**
   * The same records exactly as the SHA-1 binary list (little-endian) shows them, when they come
   * from a stored chunk: chunks hold them in that form (store schema), so the legacy binary list is
   * served without re-encoding, and the other lists are formatted from views into these bytes.
   */
  readonly sha1List?: Uint8Array;
}

/**
 * A stored chunk's records from `firstIndex` on, as its list bytes: serving the SHA-1 binary list
 * sends them as they are, so they are parsed (one copy per record) only if `records` is read.
 */
class StoredBatch implements IndexedBatch {
  #records: readonly ImaRecord[] | undefined;
  constructor(
    readonly firstIndex: number,
    readonly count: number,
    readonly sha1List: Uint8Array,
    readonly key: string,
  ) {}

  get records(): readonly ImaRecord[] {
    this.#records ??= chunkRecords({ records: this.sha1List, count: this.count }, this.key);
    return this.#records;
  }
}

/** A validated log request, ready to stream. */
export interface OpenLog {
  readonly boot: number;
  readonly from: number;
  readonly format: LogFormat;
  readonly bank: BankName;
  /** Records of the boot when the request was opened (the stream may return more: the log grows). */
  readonly count: number;
  /** The store boot's metadata (kernel boot id, first seen, bank modes). */
  readonly bootRecord: BootRecord;
  /** Records from `from` in batches, to the end of the log at the time each part is read. */
  batches(): AsyncGenerator<IndexedBatch>;
  /** The list's bytes from `from`, one encoded batch per item. */
  bytes(): AsyncGenerator<Uint8Array>;
}

/**
 * Banks the kernel has lists for on a boot: the SHA-1 list always (the legacy list,
 * docs/ima-formats.md#binary-record), plus every bank the boot's modes name.
 */
export function bootBanks(boot: BootRecord): Partial<Record<BankName, BankMode>> {
  return { sha1: 'native', ...boot.bankModes };
}

/** Records of the boot now: the stored count, or the kernel's end for the boot the tail reads. */
export async function logCount(source: LogSource, boot: number): Promise<number> {
  const stored = await source.store.storedCount(boot);
  if (source.tail === undefined || source.tail.boot !== boot) return stored;
  return Math.max(stored, await source.tail.end());
}

/**
 * Checks a log request and opens it. Throws `SERVE_UNKNOWN_BOOT`, `SERVE_UNKNOWN_BANK`, or
 * `SERVE_RANGE` for `from` past the end; `from` equal to the record count is an empty log (what a
 * Keylime verifier expects when it asks for entry == count, rust-keylime `keylime/src/ima/measurement_list.rs`).
 * @example
 * ```ts
 * const log = await openLog({ store }, { from: 1000, format: 'ascii' });
 * for await (const bytes of log.bytes()) process.stdout.write(bytes);
 * ```
 * @throws {SERVE_UNKNOWN_BOOT} no such boot in the store
 * @throws {SERVE_UNKNOWN_BANK} the boot's kernel has no list for `bank`
 * @throws {SERVE_RANGE} `from` past the boot's record count
 */
export async function openLog(source: LogSource, query: LogQuery): Promise<OpenLog> {
  const boot = query.boot ?? source.store.currentBoot;
  if (boot === undefined) throw new ServeError('SERVE_UNKNOWN_BOOT', 'the store has no boot yet');
  const bootRecord = await source.store.bootRecord(boot).catch((e: unknown) => {
    if (e instanceof StoreError && e.code === 'STORE_NOT_FOUND') throw new ServeError('SERVE_UNKNOWN_BOOT', `no boot ${boot} in the store`, { boot }, { cause: e });
    throw e;
  });
  const bank = query.bank ?? 'sha1';
  const mode = bootBanks(bootRecord)[bank];
  if (mode === undefined) {
    const have = BANKS.filter((b) => bootBanks(bootRecord)[b] !== undefined).join(', ');
    throw new ServeError('SERVE_UNKNOWN_BANK', `boot ${boot} has no ${bank} list (banks: ${have})`, { boot, parameter: 'bank' });
  }
  const from = query.from ?? 0;
  const count = await logCount(source, boot);
  if (from > count) {
    throw new ServeError('SERVE_RANGE', `from=${from} is past the end of boot ${boot}'s log (${count} records)`, { boot, index: from, count });
  }
  const format = query.format ?? 'binary';
  const encoder = listEncoder(format, bank, mode, bootRecord);
  const batches = (): AsyncGenerator<IndexedBatch> => logBatches(source, boot, from, count);
  return {
    boot,
    from,
    format,
    bank,
    count,
    bootRecord,
    batches,
    async *bytes() {
      const asStored = format === 'binary' && bank === 'sha1' && bootRecord.endianness === 'le';
      for await (const batch of batches()) yield asStored && batch.sha1List !== undefined ? batch.sha1List : encodeBatch(batch, encoder);
    },
  };
}

/** Writes the list's bytes of each record of a batch; `take` returns the batch's bytes. */
interface ListEncoder {
  add(record: ImaRecord, index: number): void;
  take(): Uint8Array;
}

/**
 * The encoder of one list. Chunks hold little-endian template data (store schema); a boot whose
 * kernel wrote big-endian lists (`endianness: 'be'`, docs/ima-formats.md#byte-order) gets its binary lists
 * back in big-endian, as the kernel's files showed them. ASCII lines are written into one reused
 * buffer.
 */
function listEncoder(format: LogFormat, bank: BankName, mode: BankMode, boot: BootRecord): ListEncoder {
  if (format === 'ascii') {
    const writer = new AsciiListWriter({ bank, mode });
    return { add: (record, index) => writer.line(record, index), take: () => writer.take() };
  }
  const parts: Uint8Array[] = [];
  const encode =
    boot.endianness === 'le'
      ? (record: ImaRecord) => encodeBinaryRecord(record, { bank, mode })
      : (record: ImaRecord) =>
          encodeBinaryRecord({ ...record, data: convertTemplateData(record.template, record.data, 'le', 'be') }, { bank, mode, endian: 'be' });
  return {
    add: (record) => parts.push(encode(record)),
    take: () => concatBytes(parts.splice(0)),
  };
}

/**
 * The list's bytes of one batch. A stored batch's records are visited as views into its list
 * bytes (no copy per record); the encoder copies what it keeps.
 */
function encodeBatch(batch: IndexedBatch, encoder: ListEncoder): Uint8Array {
  let index = batch.firstIndex;
  if (batch instanceof StoredBatch) new BinaryListParser().pushEach(batch.sha1List, (record) => encoder.add(record, index++));
  else for (const record of batch.records) encoder.add(record, index++);
  return encoder.take();
}

/**
 * Records of `boot` from `from` to at least `until` (the end when the request was opened; the
 * stream goes further if the kernel has more by then): stored chunks, then the kernel tail.
 *
 * When the tail skips records (its first batch starts past the next index), the collector removed
 * them meanwhile, so they are in the store now: the next pass reads them there (its store snapshot
 * is taken after the removal), and finding them in neither place means records were lost
 * (`SERVE_LOG_GAP`). A tail that just ends before `until` may have had records removed without
 * saying so, or `until` may have counted too much: passes go on while they find records, and the
 * stream ends after two that find none.
 */
export async function* logBatches(source: LogSource, boot: number, from: number, until = from): AsyncGenerator<IndexedBatch> {
  let next = from;
  let removalSeen = false;
  let emptyShortPasses = 0;
  for (;;) {
    const passFrom = next;
    for await (const { key, chunk } of source.store.chunks(boot, next)) {
      const skip = next - chunk.firstIndex;
      if (skip >= chunk.count) continue;
      // Served as stored: check the body's shape (count and every length field) without parsing.
      checkChunkBody(chunk, key);
      const body = skip > 0 ? chunk.records.subarray(listByteOffset(chunk.records, skip)) : chunk.records;
      yield new StoredBatch(next, chunk.count - skip, body, key);
      next = chunk.firstIndex + chunk.count;
    }
    if (removalSeen && next === passFrom) {
      throw new ServeError('SERVE_LOG_GAP', `boot ${boot}: record ${next} is neither stored nor in the kernel`, { boot, index: next });
    }
    const tail = source.tail;
    if (tail === undefined || tail.boot !== boot) return;
    removalSeen = false;
    for await (const batch of tail.records(next)) {
      if (batch.firstIndex > next) {
        removalSeen = true;
        break;
      }
      const skip = next - batch.firstIndex;
      if (skip >= batch.records.length) continue;
      const records = skip > 0 ? batch.records.slice(skip) : batch.records;
      yield { firstIndex: next, count: records.length, records };
      next = batch.firstIndex + batch.records.length;
    }
    if (removalSeen) continue;
    if (next >= until) return;
    emptyShortPasses = next === passFrom ? emptyShortPasses + 1 : 0;
    if (emptyShortPasses >= 2) return;
  }
}
