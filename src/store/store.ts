/**
 * The store: one LevelDB per device holding every boot's records (as chunks), checkpoints and
 * removal journal (design.md "Store schema"). Every write a removal depends on — sealing a chunk,
 * storing a checkpoint, journal entries — is one synced batch (Invariants 1 and 3). Reads stream a
 * chunk at a time (Invariant 4).
 */
import { bytesEqual } from '../base/bytes.js';
import { SerialQueue } from '../base/serial-queue.js';
import type { ImaRecord } from '../ima/index.js';
import {
  type Chunk,
  type ChunkDraft,
  type ChunkEntry,
  type ChunkReference,
  checkChunkBody,
  chunkHash,
  chunkRecords,
  decodeChunk,
  decodeChunkEntry,
  encodeChunk,
  encodeChunkReference,
} from './chunk.js';
import type { BatchOperation, DatabaseIterator, IterateOptions, StoreDatabase } from './database.js';
import { StoreError } from './errors.js';
import type { ChunkSegments, SegmentReader } from './segments.js';
import { FieldReader } from './shape.js';
import {
  bootKey,
  bootOfKey,
  bootRange,
  checkpointKey,
  checkpointRange,
  chunkKey,
  chunkRange,
  formatKey,
  journalKey,
  META_KEY,
} from './keys.js';
import {
  type BootInfo,
  type BootRecord,
  type Checkpoint,
  decodeBootRecord,
  decodeCheckpoint,
  decodeJournal,
  decodeMeta,
  EMPTY_JOURNAL,
  encodeBootRecord,
  encodeCheckpoint,
  encodeJournal,
  encodeMeta,
  type Journal,
  metaSchemaVersion,
  type RemovalIntent,
  type StagedListState,
  STORE_SCHEMA_VERSION,
  type StoreMeta,
} from './values.js';

/** A record read back, with its global index. */
export interface StoredRecord {
  readonly index: number;
  readonly record: ImaRecord;
}

/** A chunk read back: decoded, and its value bytes exactly as stored (evidence bundles ship these). */
export interface StoredChunk {
  /** Printable key, `chunk/<boot>/<firstIndex>`. */
  readonly key: string;
  readonly chunk: Chunk;
  /** Value bytes as stored. */
  readonly value: Uint8Array;
  /** SHA-256 of `value`: the next chunk's `prevHash`. */
  readonly hash: Uint8Array;
}

/** Options of `dropBoot`. */
export interface DropBootOptions {
  /** Must be `true`: the caller states that the export of this boot was acknowledged by its receiver. */
  readonly exportedAck: true;
  /** Refuse unless the boot was first seen at least this long ago (ms). */
  readonly olderThanMs: number;
}

/** Options of `ImaStore.open`. */
export interface ImaStoreOptions {
  /** Clock for `markExported` and `dropBoot` (ms since the epoch); `Date.now` by default. */
  readonly now?: () => number;
  /**
   * Where chunk values are written: segment files (`openStore` gives `segments/` in the LevelDB
   * directory), LevelDB keeping a reference to each (docs/store.md#segment-files). Without them
   * chunk values go into LevelDB as schema 1 wrote them. Either way both kinds are read.
   */
  readonly segments?: ChunkSegments;
}

/** Where a boot's chunk chain ends; derived from its last chunk, never stored apart from it. */
interface ChainTail {
  /** Records 0..storedCount-1 are in committed chunks. */
  readonly storedCount: number;
  /** SHA-256 of the last chunk's value bytes (the next chunk's `prevHash`); null before the first. */
  readonly lastChunkHash: Uint8Array | null;
}

/** The latest boot, cached: every chunk commit reads and advances its tail. */
interface CurrentBoot {
  readonly boot: number;
  readonly record: BootRecord;
  readonly tail: ChainTail;
}

const EMPTY_TAIL: ChainTail = { storedCount: 0, lastChunkHash: null };

function tailOf(last: StoredChunk): ChainTail {
  return { storedCount: last.chunk.firstIndex + last.chunk.count, lastChunkHash: last.hash };
}

/** The tail a boot's last chunk entry gives, without reading a referenced value. */
function tailOfEntry(last: ChunkEntry | undefined): ChainTail {
  if (last === undefined) return EMPTY_TAIL;
  if ('reference' in last) return { storedCount: last.reference.firstIndex + last.reference.count, lastChunkHash: last.reference.hash };
  return { storedCount: last.chunk.firstIndex + last.chunk.count, lastChunkHash: chunkHash(last.value) };
}

function isCodedError(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && 'code' in e && e.code === code;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * The LevelDB store of one device. Open with {@link ImaStore.open} (or `openStore` for a LevelDB
 * directory); one process owns it (`STORE_LOCKED` otherwise). Writes are serialised; in-memory
 * state changes only after a write reached disk, so a failed write (`STORE_WRITE_FAILED`) can be
 * retried as is.
 */
export class ImaStore {
  readonly #db: StoreDatabase;
  readonly #segments: ChunkSegments | undefined;
  readonly #now: () => number;
  #meta: StoreMeta;
  /** The current (latest) boot and its metadata as stored, or undefined before the first boot. */
  #current: CurrentBoot | undefined;
  /** The write queue: writes run one after another. */
  readonly #writes = new SerialQueue();
  /**
   * Set after a failed write. LevelDB may have appended a torn record to its log; records appended
   * behind it are dropped by the log reader on the next open, and a failed background compaction
   * fails every later write (both seen on a full 2 MiB tmpfs: a synced put that succeeded after an
   * ENOSPC failure was gone after reopen; test/store/process.test.ts). So the next write first
   * reopens, which starts a fresh log and clears the error.
   */
  #mustReopen = false;
  /** The reopen after a failed write failed too: the database is closed until a reopen works. */
  #closed = false;

  private constructor(db: StoreDatabase, meta: StoreMeta, current: CurrentBoot | undefined, options: ImaStoreOptions) {
    this.#db = db;
    this.#segments = options.segments;
    this.#meta = meta;
    this.#current = current;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Opens the store on `db` (not yet open). Creates `meta` in an empty database. Throws
   * `STORE_LOCKED` if another process holds the database, `STORE_VERSION` if it was written by a
   * newer schema, `STORE_CORRUPT` if LevelDB reports corruption or `meta`, the last boot or its
   * last chunk (which holds the chain head) does not decode, `STORE_WRITE_FAILED` if LevelDB cannot
   * open for another reason (e.g. no space for its new log).
   */
  static async open(db: StoreDatabase, options: ImaStoreOptions = {}): Promise<ImaStore> {
    try {
      await db.open();
    } catch (e) {
      const cause = typeof e === 'object' && e !== null && 'cause' in e ? e.cause : undefined;
      if (isCodedError(cause, 'LEVEL_LOCKED')) {
        throw new StoreError('STORE_LOCKED', 'the store is open in another process (LevelDB lock held)', {}, { cause: e });
      }
      if (isCodedError(cause, 'LEVEL_CORRUPTION')) {
        throw new StoreError('STORE_CORRUPT', `LevelDB files are corrupt: ${describe(cause)}`, {}, { cause: e });
      }
      throw new StoreError('STORE_WRITE_FAILED', `cannot open the store: ${describe(cause ?? e)}`, {}, { cause: e });
    }
    try {
      const meta = await ImaStore.#loadMeta(db, options.segments !== undefined);
      const last = await first(db, { ...bootRange(), reverse: true, limit: 1 });
      let current: CurrentBoot | undefined;
      if (last !== undefined) {
        const boot = bootOfKey(last[0]);
        const lastEntry = await lastChunkEntryOf(db, boot);
        current = { boot, record: decodeBootRecord(last[1], formatKey(last[0])), tail: tailOfEntry(lastEntry) };
        if (options.segments !== undefined) await cutTornTail(options.segments, boot, lastEntry);
      }
      if (options.segments !== undefined) await removeOrphanSegments(db, options.segments);
      return new ImaStore(db, meta, current, options);
    } catch (e) {
      await options.segments?.close();
      await db.close();
      throw e;
    }
  }

  /** Reads (or creates) `meta`; with segment files, a schema 1 store is marked schema 2 before any reference is written. */
  static async #loadMeta(db: StoreDatabase, segments: boolean): Promise<StoreMeta> {
    const key = formatKey(META_KEY);
    const bytes = await db.get(META_KEY);
    if (bytes === undefined) {
      const meta: StoreMeta = { schema: STORE_SCHEMA_VERSION, akPublic: null, deviceId: null };
      await writeOrFail(db, [{ type: 'put', key: META_KEY, value: encodeMeta(meta) }], key);
      return meta;
    }
    const found = metaSchemaVersion(bytes, key);
    if (found > STORE_SCHEMA_VERSION) {
      throw new StoreError(
        'STORE_VERSION',
        `the store has schema version ${found}; this imakeep reads up to version ${STORE_SCHEMA_VERSION}`,
        { key, foundVersion: found, supportedVersion: STORE_SCHEMA_VERSION },
      );
    }
    const meta = decodeMeta(bytes, key);
    if (!segments || meta.schema >= STORE_SCHEMA_VERSION) return meta;
    // An imakeep that reads schema 1 only would take a reference for a corrupt chunk: it refuses
    // the store with STORE_VERSION instead.
    const upgraded: StoreMeta = { ...meta, schema: STORE_SCHEMA_VERSION };
    await writeOrFail(db, [{ type: 'put', key: META_KEY, value: encodeMeta(upgraded) }], key);
    return upgraded;
  }

  /** Closes the database; pending writes finish first. */
  async close(): Promise<void> {
    await this.#writes.idle();
    await this.#segments?.close();
    await this.#db.close();
  }

  // ---- writes ---------------------------------------------------------------------------------

  /** Runs `task` after every earlier write, reopening first if a write failed. */
  #serialise<T>(task: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.#mustReopen) {
        await this.#db.close();
        try {
          await this.#db.open();
        } catch (e) {
          this.#closed = true;
          throw new StoreError('STORE_WRITE_FAILED', `cannot reopen the store after a failed write: ${describe(e)}`, {}, { cause: e });
        }
        this.#mustReopen = false;
        this.#closed = false;
      }
      return task();
    };
    return this.#writes.run(run);
  }

  /** One synced batch; on failure the store reopens before its next write. */
  async #commit(operations: BatchOperation[], what: string, boot?: number): Promise<void> {
    try {
      await writeOrFail(this.#db, operations, what, boot);
    } catch (e) {
      this.#mustReopen = true;
      throw e;
    }
  }

  /** The store-wide metadata. */
  get meta(): StoreMeta {
    return this.#meta;
  }

  /** Sets the AK public area and/or the device identity (synced). */
  updateMeta(patch: { readonly akPublic?: Uint8Array | null; readonly deviceId?: string | null }): Promise<StoreMeta> {
    return this.#serialise(async () => {
      const meta: StoreMeta = { ...this.#meta, ...patch };
      await this.#commit([{ type: 'put', key: META_KEY, value: encodeMeta(meta) }], 'meta');
      this.#meta = meta;
      return meta;
    });
  }

  /**
   * Starts a new boot segment (the kernel's boot_id changed) and makes it current. Its number is
   * the previous boot's plus one (0 for the first): see keys.ts for why the store numbers boots.
   */
  beginBoot(info: BootInfo): Promise<number> {
    return this.#serialise(async () => {
      const boot = this.#current === undefined ? 0 : this.#current.boot + 1;
      const record: BootRecord = { ...info, exported: null };
      await this.#commit(
        [
          { type: 'put', key: bootKey(boot), value: encodeBootRecord(record) },
          { type: 'put', key: journalKey(boot), value: encodeJournal(EMPTY_JOURNAL) },
        ],
        formatKey(bootKey(boot)),
        boot,
      );
      this.#current = { boot, record, tail: EMPTY_TAIL };
      return boot;
    });
  }

  /**
   * Commits a chunk (one synced put; the chunk is its own record of the boot's stored count and
   * chain head).
   * Throws `STORE_CHAIN_BROKEN` unless `draft.firstIndex` equals the boot's stored count (no gap,
   * no overlap: each record is stored exactly once), `STORE_CORRUPT` if `draft.records` does not
   * hold exactly `draft.count` records.
   */
  appendChunk(boot: number, draft: ChunkDraft): Promise<StoredChunk> {
    return this.#serialise(async () => {
      const tail = await this.#tail(boot);
      const key = chunkKey(boot, draft.firstIndex);
      const name = formatKey(key);
      if (draft.firstIndex !== tail.storedCount) {
        throw new StoreError(
          'STORE_CHAIN_BROKEN',
          `${name}: boot ${boot} has ${tail.storedCount} records stored, a chunk starting at ${draft.firstIndex} would ${draft.firstIndex < tail.storedCount ? 'overlap' : 'leave a gap'}`,
          { boot, key: name, expectedIndex: tail.storedCount, actualIndex: draft.firstIndex },
        );
      }
      if (draft.count === 0) throw new RangeError('an empty chunk is never stored');
      if (draft.replay.recordCount !== draft.firstIndex + draft.count) {
        throw new StoreError(
          'STORE_CHAIN_BROKEN',
          `${name}: replay state counts ${draft.replay.recordCount} records, the chunk ends at ${draft.firstIndex + draft.count}`,
          { boot, key: name, expectedIndex: draft.firstIndex + draft.count, actualIndex: draft.replay.recordCount },
        );
      }
      const chunk: Chunk = { ...draft, prevHash: tail.lastChunkHash };
      // Refuse a body that is not `count` whole records, checked without copying them.
      checkChunkBody(chunk, name);
      const value = encodeChunk(chunk);
      const stored: StoredChunk = { key: name, chunk, value, hash: chunkHash(value) };
      await this.#commit([{ type: 'put', key, value: await this.#place(boot, stored) }], name, boot);
      if (this.#current?.boot === boot) this.#current = { ...this.#current, tail: tailOf(stored) };
      return stored;
    });
  }

  /**
   * What LevelDB keeps at a chunk's key: with segment files, a reference to the value appended
   * (and fdatasync'ed) to the boot's segment first, so no reference ever points at bytes not on
   * disk; else the value itself.
   */
  async #place(boot: number, stored: StoredChunk): Promise<Uint8Array> {
    if (this.#segments === undefined) return stored.value;
    let offset: number;
    try {
      offset = await this.#segments.append(boot, stored.value);
    } catch (e) {
      throw new StoreError('STORE_WRITE_FAILED', `${stored.key}: segment write failed: ${describe(e)}`, { boot, key: stored.key }, { cause: e });
    }
    const { firstIndex, count } = stored.chunk;
    return encodeChunkReference({ firstIndex, count, offset, length: stored.value.length, hash: stored.hash });
  }

  /**
   * Stores a checkpoint (synced). Throws `STORE_CHAIN_BROKEN` if it claims records not stored yet:
   * a checkpoint only ever covers stored records (Invariant 1).
   */
  storeCheckpoint(boot: number, checkpoint: Checkpoint): Promise<void> {
    return this.#serialise(async () => {
      const { storedCount } = await this.#tail(boot);
      const key = checkpointKey(boot, checkpoint.count);
      if (checkpoint.count > storedCount) {
        throw new StoreError(
          'STORE_CHAIN_BROKEN',
          `${formatKey(key)}: covers ${checkpoint.count} records, only ${storedCount} are stored`,
          { boot, key: formatKey(key), expectedIndex: storedCount, actualIndex: checkpoint.count },
        );
      }
      await this.#commit([{ type: 'put', key, value: encodeCheckpoint(checkpoint) }], formatKey(key), boot);
    });
  }

  /**
   * Journals a removal before the kernel write (synced; design.md "remove", Invariant 3). Throws
   * `STORE_JOURNAL_CONFLICT` if an intent is pending or `intent.removed` is not the journal's T,
   * and for flavour `n` `STORE_REMOVAL_UNCOVERED` unless records T..T+n-1 are stored and covered
   * by a stored checkpoint. (A `staged` removal is checked when its staged list is stored:
   * `journalStaged`.)
   */
  journalIntent(boot: number, intent: RemovalIntent): Promise<Journal> {
    return this.#serialise(async () => {
      const journal = await this.journal(boot);
      if (journal.pending !== null || intent.removed !== journal.removed) {
        throw conflict(boot, journal.pending !== null ? 'an intent is already pending' : `intent says T=${intent.removed}, the journal T=${journal.removed}`);
      }
      if (intent.flavor === 'n') await this.#checkCovered(boot, intent.removed + intent.n);
      return this.#writeJournal(boot, { ...journal, pending: intent, staged: null });
    });
  }

  /**
   * Records the progress of a pending `staged` removal (synced): `staged` once `A` was written and
   * the staged list's length is known, `stored` once those records are stored and checkpointed
   * (checked: `STORE_REMOVAL_UNCOVERED` otherwise). Sets the pending intent's `n` to `count`.
   */
  journalStaged(boot: number, state: StagedListState): Promise<Journal> {
    return this.#serialise(async () => {
      const journal = await this.journal(boot);
      const pending = journal.pending;
      if (pending === null || pending.flavor !== 'staged') throw conflict(boot, 'no staged removal is pending');
      if (state.step === 'stored') await this.#checkCovered(boot, journal.removed + state.count);
      return this.#writeJournal(boot, { ...journal, pending: { ...pending, n: state.count }, staged: state });
    });
  }

  /**
   * Journals the outcome of the pending removal (synced): `done` adds its `n` to T, otherwise T
   * stays. Either way nothing is pending afterwards. Throws `STORE_JOURNAL_CONFLICT` without a
   * pending intent, or for a `staged` removal whose list was not journaled as `stored`.
   */
  journalOutcome(boot: number, outcome: { readonly done: boolean }): Promise<Journal> {
    return this.#serialise(async () => {
      const journal = await this.journal(boot);
      const pending = journal.pending;
      if (pending === null) throw conflict(boot, 'no intent is pending');
      if (outcome.done && pending.flavor === 'staged' && journal.staged?.step !== 'stored') {
        throw conflict(boot, 'a staged removal is done only after its staged list was stored');
      }
      return this.#writeJournal(boot, { removed: journal.removed + (outcome.done ? pending.n : 0), pending: null, staged: null });
    });
  }


  async #writeJournal(boot: number, journal: Journal): Promise<Journal> {
    const key = journalKey(boot);
    await this.#commit([{ type: 'put', key, value: encodeJournal(journal) }], formatKey(key), boot);
    return journal;
  }

  /** Invariant 1: records 0..end-1 must be stored and covered by a stored checkpoint. */
  async #checkCovered(boot: number, end: number): Promise<void> {
    const stored = (await this.#tail(boot)).storedCount;
    const covered = (await this.lastCheckpoint(boot))?.count ?? 0;
    if (end > stored || end > covered) {
      throw new StoreError(
        'STORE_REMOVAL_UNCOVERED',
        `boot ${boot}: removing up to record ${end} needs it stored (${stored}) and checkpointed (${covered})`,
        { boot, expectedIndex: Math.min(stored, covered), actualIndex: end },
      );
    }
  }

  /** Records that records 0..cursor-1 of `boot` were exported and the receiver acknowledged them (synced). */
  markExported(boot: number, cursor: number): Promise<BootRecord> {
    return this.#serialise(async () => {
      const record = await this.bootRecord(boot);
      const { storedCount } = await this.#tail(boot);
      if (!Number.isSafeInteger(cursor) || cursor < 0 || cursor > storedCount) {
        throw new RangeError(`export cursor ${cursor} is outside 0..${storedCount}`);
      }
      const next: BootRecord = { ...record, exported: { cursor, at: this.#now() } };
      await this.#commit([{ type: 'put', key: bootKey(boot), value: encodeBootRecord(next) }], formatKey(bootKey(boot)), boot);
      this.#remember(boot, next);
      return next;
    });
  }

  /**
   * Deletes a boot segment: chunks, checkpoints, journal, then its metadata (so an interrupted drop
   * is finished by calling again). Refuses with `STORE_RETENTION_REFUSED` for the current boot, a
   * boot not exported and acknowledged up to its stored count, or one first seen less than
   * `olderThanMs` ago. Everything is kept unless this is called.
   */
  dropBoot(boot: number, options: DropBootOptions): Promise<void> {
    return this.#serialise(async () => {
      const record = await this.bootRecord(boot);
      const refuse = (why: string): never => {
        throw new StoreError('STORE_RETENTION_REFUSED', `boot ${boot} is kept: ${why}`, { boot });
      };
      if (options.exportedAck !== true) refuse('exportedAck is not true');
      if (this.#current?.boot === boot) refuse('it is the current boot');
      const { storedCount } = await this.#tail(boot);
      if (record.exported === null || record.exported.cursor < storedCount) {
        refuse(`exported and acknowledged up to ${record.exported?.cursor ?? 0} of ${storedCount} records`);
      }
      const age = this.#now() - record.firstSeen;
      if (age < options.olderThanMs) refuse(`first seen ${age} ms ago, younger than ${options.olderThanMs} ms`);
      try {
        await this.#db.clear(chunkRange(boot));
        await this.#db.clear(checkpointRange(boot));
      } catch (e) {
        this.#mustReopen = true;
        throw new StoreError('STORE_WRITE_FAILED', `boot ${boot}: drop failed: ${describe(e)}`, { boot }, { cause: e });
      }
      await this.#commit(
        [
          { type: 'del', key: journalKey(boot) },
          { type: 'del', key: bootKey(boot) },
        ],
        formatKey(bootKey(boot)),
        boot,
      );
      // Only now that no key refers to it (the synced batch above follows the clears in LevelDB's
      // log); a crash before this leaves an orphan that the next open removes.
      await this.#segments?.remove(boot);
    });
  }

  #remember(boot: number, record: BootRecord): void {
    if (this.#current?.boot === boot) this.#current = { ...this.#current, record };
  }

  /** The boot's chain tail: cached for the current boot, else read from its last chunk. */
  async #tail(boot: number): Promise<ChainTail> {
    if (this.#current?.boot === boot) return this.#current.tail;
    await this.bootRecord(boot);
    return tailOfEntry(await lastChunkEntryOf(await this.#readable(), boot));
  }

  // ---- reads ----------------------------------------------------------------------------------

  /**
   * The database, open: after a failed write whose reopen failed too (a full disk), a read first
   * retries that reopen (in the write queue), and throws `STORE_WRITE_FAILED` while it fails,
   * rather than LevelDB's untyped "Database is not open".
   */
  async #readable(): Promise<StoreDatabase> {
    if (this.#closed) await this.#serialise(async () => undefined);
    return this.#db;
  }

  /** The current (latest) boot's number, or undefined before `beginBoot`. */
  get currentBoot(): number | undefined {
    return this.#current?.boot;
  }

  /** Metadata of a boot; `STORE_NOT_FOUND` if there is no such boot. */
  async bootRecord(boot: number): Promise<BootRecord> {
    if (this.#current?.boot === boot) return this.#current.record;
    const key = bootKey(boot);
    const bytes = await (await this.#readable()).get(key);
    if (bytes === undefined) throw new StoreError('STORE_NOT_FOUND', `no boot ${boot} in the store`, { boot, key: formatKey(key) });
    return decodeBootRecord(bytes, formatKey(key));
  }

  /** Every boot segment, oldest first. */
  async *boots(): AsyncGenerator<{ readonly boot: number; readonly record: BootRecord }> {
    for await (const [key, value] of entries(await this.#readable(), bootRange())) {
      yield { boot: bootOfKey(key), record: decodeBootRecord(value, formatKey(key)) };
    }
  }

  /** Records 0..n-1 of the boot are stored. */
  async storedCount(boot: number): Promise<number> {
    return (await this.#tail(boot)).storedCount;
  }

  /** The boot's removal journal. */
  async journal(boot: number): Promise<Journal> {
    const key = journalKey(boot);
    const bytes = await (await this.#readable()).get(key);
    if (bytes === undefined) throw new StoreError('STORE_NOT_FOUND', `no journal for boot ${boot}`, { boot, key: formatKey(key) });
    return decodeJournal(bytes, formatKey(key));
  }

  /** The checkpoint covering the most records (of those covering fewer than `belowCount`, when given), or undefined. */
  async lastCheckpoint(boot: number, belowCount?: number): Promise<Checkpoint | undefined> {
    await this.bootRecord(boot);
    const range = checkpointRange(boot);
    const last = await first(await this.#readable(), { ...range, ...(belowCount === undefined ? {} : { lt: checkpointKey(boot, belowCount) }), reverse: true, limit: 1 });
    return last === undefined ? undefined : decodeCheckpoint(last[1], formatKey(last[0]));
  }

  /** Checkpoints of a boot covering at least `fromCount` records, in order. */
  async *checkpoints(boot: number, fromCount = 0): AsyncGenerator<Checkpoint> {
    await this.bootRecord(boot);
    const range = checkpointRange(boot);
    for await (const [key, value] of entries(await this.#readable(), { gte: checkpointKey(boot, fromCount), lt: range.lt })) {
      yield decodeCheckpoint(value, formatKey(key));
    }
  }

  /** The last committed chunk of the boot, or undefined. */
  async lastChunk(boot: number): Promise<StoredChunk | undefined> {
    await this.bootRecord(boot);
    const last = await first(await this.#readable(), { ...chunkRange(boot), reverse: true, limit: 1 });
    if (last === undefined) return undefined;
    const values = new ChunkValues(this.#segments, boot);
    try {
      for await (const stored of values.walk([last])) return stored;
      return undefined;
    } finally {
      await values.close();
    }
  }

  /**
   * Chunks of the boot from the one holding global index `fromIndex`, in order, one decoded at a
   * time. Checks the chain as it goes (`STORE_CHAIN_BROKEN` if a chunk's `prevHash` or
   * `firstIndex` does not follow from the one before).
   */
  async *chunks(boot: number, fromIndex = 0): AsyncGenerator<StoredChunk> {
    await this.bootRecord(boot);
    const range = chunkRange(boot);
    // The chunk holding fromIndex is the last one starting at or before it.
    const floor = await first(await this.#readable(), { gte: range.gte, lte: chunkKey(boot, fromIndex), reverse: true, limit: 1 });
    let previous: StoredChunk | undefined;
    const readAhead = { highWaterMarkBytes: CHUNK_READ_AHEAD_BYTES };
    const values = new ChunkValues(this.#segments, boot);
    try {
      for await (const stored of values.walk(entries(await this.#readable(), { gte: floor?.[0] ?? range.gte, lt: range.lt, ...readAhead }))) {
        if (previous !== undefined) checkLink(boot, previous, stored);
        yield stored;
        previous = stored;
      }
    } finally {
      await values.close();
    }
  }

  /** Records of the boot from global index `fromIndex` on, in order, streaming chunk by chunk. */
  async *records(boot: number, fromIndex = 0): AsyncGenerator<StoredRecord> {
    for await (const { key, chunk } of this.chunks(boot, fromIndex)) {
      let index = chunk.firstIndex;
      for (const record of chunkRecords(chunk, key)) {
        if (index >= fromIndex) yield { index, record };
        index++;
      }
    }
  }
}

/**
 * How far a chunk iteration reads ahead: 256 KiB, four default chunks per trip to LevelDB's
 * thread instead of one (classic-level's 16 KiB default is below one chunk): serving the stored
 * SHA-1 list did 179-209 MB per CPU-second with 16 KiB and 246-248 with 256 KiB
 * (bench/results/lean.md). The memory it holds is bounded by this.
 */
const CHUNK_READ_AHEAD_BYTES = 256 * 1024;

function conflict(boot: number, why: string): StoreError {
  return new StoreError('STORE_JOURNAL_CONFLICT', `boot ${boot} journal: ${why}`, { boot, key: formatKey(journalKey(boot)) });
}

/**
 * A boot's chunk values as read back: inline ones as they are, referenced ones from the boot's
 * segment file (opened on the first reference), checked against the reference: `STORE_CORRUPT`
 * if the file is missing, too short, or its bytes do not hash to the reference's hash.
 */
class ChunkValues {
  readonly #segments: ChunkSegments | undefined;
  readonly #boot: number;
  #reader: SegmentReader | undefined;

  constructor(segments: ChunkSegments | undefined, boot: number) {
    this.#segments = segments;
    this.#boot = boot;
  }

  /**
   * The chunks of `entries` (chunk keys and their LevelDB values, in key order). A boot's values
   * were appended to its segment one after another, so references that follow each other in the
   * file are read together, one read per run (see {@link SegmentReader.read}): the first run is
   * one value (a walk that wants one chunk, `lastChunk` or `replayAt`, reads one), each next one up
   * to twice the bytes of the last, up to {@link SEGMENT_READ_AHEAD_BYTES} (plus one value).
   * Each value is checked, in order, before it is yielded.
   */
  async *walk(entries: AsyncIterable<[Uint8Array, Uint8Array]> | Iterable<[Uint8Array, Uint8Array]>): AsyncGenerator<StoredChunk> {
    let run: Referenced[] = [];
    let runBytes = 0;
    let budget = 0;
    for await (const [key, bytes] of entries) {
      const name = formatKey(key);
      const entry = decodeChunkEntry(bytes, name);
      const last = run[run.length - 1];
      const follows = 'reference' in entry && last !== undefined && last.reference.offset + last.reference.length === entry.reference.offset;
      if (last !== undefined && !follows) {
        yield* this.#readRun(run);
        run = [];
        runBytes = 0;
      }
      if (!('reference' in entry)) {
        yield { key: name, chunk: entry.chunk, value: entry.value, hash: chunkHash(entry.value) };
        continue;
      }
      run.push({ name, reference: entry.reference });
      runBytes += entry.reference.length;
      if (runBytes >= budget) {
        yield* this.#readRun(run);
        budget = Math.min(SEGMENT_READ_AHEAD_BYTES, 2 * runBytes);
        run = [];
        runBytes = 0;
      }
    }
    if (run.length > 0) yield* this.#readRun(run);
  }

  /** Reads a run of references to consecutive segment bytes at once, and checks each value. */
  async *#readRun(run: readonly Referenced[]): AsyncGenerator<StoredChunk> {
    const head = run[0];
    if (head === undefined) return;
    const values = await (await this.#open(head.name)).read(
      head.reference.offset,
      run.map((r) => r.reference.length),
    );
    for (let i = 0; i < run.length; i++) yield this.#checked(run[i] as Referenced, values[i] ?? new Uint8Array(0));
  }

  #checked({ name, reference }: Referenced, value: Uint8Array): StoredChunk {
    const { offset, length, firstIndex, count, hash } = reference;
    if (value.length !== length) throw FieldReader.corrupt(name, `refers to bytes ${offset}..${offset + length} of segment ${this.#boot}, which ends at ${offset + value.length}`);
    const actual = chunkHash(value);
    if (!bytesEqual(actual, hash)) throw FieldReader.corrupt(name, `refers to bytes ${offset}..${offset + length} of segment ${this.#boot}, which do not hash to the reference's hash`);
    const chunk = decodeChunk(value, name);
    if (chunk.firstIndex !== firstIndex || chunk.count !== count) throw FieldReader.corrupt(name, `reference says records ${firstIndex}+${count}, its chunk ${chunk.firstIndex}+${chunk.count}`);
    return { key: name, chunk, value, hash };
  }

  async #open(name: string): Promise<SegmentReader> {
    if (this.#reader !== undefined) return this.#reader;
    if (this.#segments === undefined) throw FieldReader.corrupt(name, 'is in a segment file, and the store was opened without segment files');
    const reader = await this.#segments.reader(this.#boot);
    if (reader === undefined) throw FieldReader.corrupt(name, `is in segment ${this.#boot}, which is missing`);
    this.#reader = reader;
    return reader;
  }

  async close(): Promise<void> {
    await this.#reader?.close();
  }
}

/** A chunk reference read from LevelDB, its value not yet read. */
interface Referenced {
  readonly name: string;
  readonly reference: ChunkReference;
}

/**
 * Most segment bytes a chunk walk reads at once (a run of values, one `preadv`): 1 MiB, ~16
 * default chunks. One read per chunk cost ~60 µs of CPU each beyond the copy; serving the stored
 * SHA-1 list of 100k records (`openLog().bytes()`) went from 133 to 482 MB per CPU-second (medians
 * of 3 interleaved runs at load 9.2-9.7; bench/results/lean.md). The values a walk holds ahead of
 * its consumer are bounded by this (plus one value).
 */
const SEGMENT_READ_AHEAD_BYTES = 1024 * 1024;

async function lastChunkEntryOf(db: StoreDatabase, boot: number): Promise<ChunkEntry | undefined> {
  const last = await first(db, { ...chunkRange(boot), reverse: true, limit: 1 });
  return last === undefined ? undefined : decodeChunkEntry(last[1], formatKey(last[0]));
}

/**
 * Cuts what a crash left past the current boot's last reference (a value appended whose reference
 * never reached LevelDB). Only when the last entry is a reference or there is none: after an
 * inline chunk (a store written without segment files) the end of the referenced bytes is not
 * known without a scan, and an unreferenced tail is only wasted space, never read.
 */
async function cutTornTail(segments: ChunkSegments, boot: number, last: ChunkEntry | undefined): Promise<void> {
  if (last === undefined) await segments.truncate(boot, 0);
  else if ('reference' in last) await segments.truncate(boot, last.reference.offset + last.reference.length);
}

/** Deletes segment files of boots no longer in the store (a `dropBoot` interrupted after its last batch). */
async function removeOrphanSegments(db: StoreDatabase, segments: ChunkSegments): Promise<void> {
  for (const boot of await segments.boots()) {
    if ((await db.get(bootKey(boot))) === undefined) await segments.remove(boot);
  }
}

function checkLink(boot: number, previous: StoredChunk, next: StoredChunk): void {
  const expected = previous.chunk.firstIndex + previous.chunk.count;
  const linked = next.chunk.prevHash !== null && bytesEqual(next.chunk.prevHash, previous.hash);
  if (next.chunk.firstIndex !== expected || !linked) {
    throw new StoreError(
      'STORE_CHAIN_BROKEN',
      `${next.key}: does not follow ${previous.key} (${next.chunk.firstIndex !== expected ? `expected first index ${expected}` : 'prevHash mismatch'})`,
      { boot, key: next.key, expectedIndex: expected, actualIndex: next.chunk.firstIndex },
    );
  }
}

/** A synced batch, failures as `STORE_WRITE_FAILED` (the LevelDB error, with its errno text, in `cause`). */
async function writeOrFail(db: StoreDatabase, operations: BatchOperation[], what: string, boot?: number): Promise<void> {
  try {
    await db.batch(operations, { sync: true });
  } catch (e) {
    throw new StoreError('STORE_WRITE_FAILED', `${what}: write failed: ${describe(e)}`, boot === undefined ? { key: what } : { boot, key: what }, { cause: e });
  }
}

/** Entries of a range, one at a time; the iterator is closed however the loop ends. */
async function* entries(db: StoreDatabase, options: IterateOptions): AsyncGenerator<[Uint8Array, Uint8Array]> {
  const iterator: DatabaseIterator = db.iterator(options);
  try {
    for (let entry = await iterator.next(); entry !== undefined; entry = await iterator.next()) yield entry;
  } finally {
    await iterator.close();
  }
}

async function first(db: StoreDatabase, options: IterateOptions): Promise<[Uint8Array, Uint8Array] | undefined> {
  for await (const entry of entries(db, options)) return entry;
  return undefined;
}
