/**
 * Chunks: the unit in which records are committed (design.md "Store schema", `chunk/<boot>/<first>`).
 * A chunk holds `count` records with global indexes firstIndex..firstIndex+count-1 as the kernel's
 * SHA-1 binary list records (canonical little-endian), the replay state of every bank after its
 * last record, and the SHA-256 of the previous chunk's stored value bytes (null for a boot's first
 * chunk), so the stored chunks of a boot form a hash chain a verifier can walk.
 */
import { BANKS, bankHash, BinaryListParser, encodeBinaryRecordInto, encodedRecordLength, ImaError, parseBinaryList, type ImaRecord, type PcrReplayState } from '../ima/index.js';
import { decodeValue, encodeValue } from './cbor.js';
import { StoreError } from './errors.js';
import { FieldReader } from './shape.js';
import { BANK_MODES } from './values.js';

/** Size of a chunk hash (SHA-256). */
export const CHUNK_HASH_SIZE = 32;

/** A chunk as the collector hands it to the store; the store adds the chain link. */
export interface ChunkDraft {
  /** Global index of the first record. */
  readonly firstIndex: number;
  /** Number of records in `records`. */
  readonly count: number;
  /** Concatenated SHA-1 binary list records, little-endian. */
  readonly records: Uint8Array;
  /** Replay state of every bank after the chunk's last record (`PcrReplay.toState()`); its `recordCount` is firstIndex + count. */
  readonly replay: PcrReplayState;
}

/** A chunk as stored. */
export interface Chunk extends ChunkDraft {
  /** SHA-256 of the previous chunk's value bytes; null for the first chunk of a boot. */
  readonly prevHash: Uint8Array | null;
}

/** Encodes a chunk value (field order fixed: see the golden vector). */
export function encodeChunk(chunk: Chunk): Uint8Array {
  return encodeValue({
    firstIndex: chunk.firstIndex,
    count: chunk.count,
    prevHash: chunk.prevHash,
    records: chunk.records,
    replay: replayStateValue(chunk.replay),
  });
}

/**
 * A replay state as the store encodes it (field order fixed: part of the chunk golden vector),
 * also inside evidence bundles.
 */
export function replayStateValue(state: PcrReplayState): unknown {
  return {
    recordCount: state.recordCount,
    banks: state.banks.map((b) => ({ bank: b.bank, mode: b.mode, pcrs: b.pcrs.map((p) => ({ pcr: p.pcr, value: p.value })) })),
  };
}

/** Reads a replay state encoded by {@link replayStateValue}. */
export function decodeReplayState(r: FieldReader): PcrReplayState {
  return {
    recordCount: r.count('recordCount'),
    banks: r.array('banks', (value, where) => {
      const b = new FieldReader(value, where);
      return {
        bank: b.oneOf('bank', BANKS),
        mode: b.oneOf('mode', BANK_MODES),
        pcrs: b.array('pcrs', (pcr, at) => {
          const p = new FieldReader(pcr, at);
          return { pcr: p.count('pcr'), value: p.bytes('value') };
        }),
      };
    }),
  };
}

/** Decodes a chunk value; `records` and byte strings inside `replay` are views into `bytes`. */
export function decodeChunk(bytes: Uint8Array, key: string): Chunk {
  return chunkOf(new FieldReader(decodeValue(bytes, key), key));
}

function chunkOf(r: FieldReader): Chunk {
  return {
    firstIndex: r.count('firstIndex'),
    count: r.count('count'),
    prevHash: r.isNull('prevHash') ? null : r.bytes('prevHash', CHUNK_HASH_SIZE),
    records: r.bytes('records'),
    replay: decodeReplayState(r.object('replay')),
  };
}

/**
 * LevelDB's value at a chunk key when the chunk's value bytes are in its boot's segment file
 * (schema 2, docs/store.md#segment-files): where they are, the boot's chain tail without reading
 * them (`firstIndex`, `count`, `hash`), and the hash that checks them when they are read back.
 */
export interface ChunkReference {
  readonly firstIndex: number;
  readonly count: number;
  /** Byte offset of the chunk value in the segment file. */
  readonly offset: number;
  /** Length of the chunk value. */
  readonly length: number;
  /** SHA-256 of the chunk value ({@link chunkHash}): the next chunk's `prevHash`. */
  readonly hash: Uint8Array;
}

/** Encodes a chunk reference (field order fixed: see the golden vector; `segmentOffset` tells it from a chunk value). */
export function encodeChunkReference(ref: ChunkReference): Uint8Array {
  return encodeValue({ segmentOffset: ref.offset, length: ref.length, firstIndex: ref.firstIndex, count: ref.count, hash: ref.hash });
}

/**
 * A chunk key's value: the chunk value itself (every chunk of schema 1, and of a store opened
 * without segment files) or a {@link ChunkReference} to it.
 */
export type ChunkEntry = { readonly value: Uint8Array; readonly chunk: Chunk } | { readonly reference: ChunkReference };

/** Decodes the value at a chunk key (`STORE_CORRUPT` if it is neither a chunk nor a reference). */
export function decodeChunkEntry(bytes: Uint8Array, key: string): ChunkEntry {
  const r = new FieldReader(decodeValue(bytes, key), key);
  if (!r.has('segmentOffset')) return { value: bytes, chunk: chunkOf(r) };
  return {
    reference: {
      offset: r.count('segmentOffset'),
      length: r.count('length'),
      firstIndex: r.count('firstIndex'),
      count: r.count('count'),
      hash: r.bytes('hash', CHUNK_HASH_SIZE),
    },
  };
}

/**
 * The chain link to a chunk: SHA-256 of its value bytes exactly as stored. Every chunk read is
 * hashed (the store checks each link it walks), so this is on the serving path: OpenSSL's SHA-256
 * (`node:crypto`) hashes a 64 KiB value at 1.6 GB/s against 0.2 GB/s for @noble/hashes on this
 * machine (bench/results/lean.md), which capped serving the binary list below 200 MB/s.
 */
export function chunkHash(value: Uint8Array): Uint8Array {
  return bankHash('sha256', value);
}

/** What a chunk's body is checked against: its list bytes and the count it claims. */
type ChunkBody = Pick<Chunk, 'records' | 'count'>;

/**
 * Records of a chunk, in order (parsed with the `ima` binary list parser: each record one copy of
 * its bytes; a chunk is parsed whole, so memory is one chunk). Throws `STORE_CORRUPT` (the
 * `ImaError` as cause) unless the body holds exactly `count` well-formed records.
 */
export function chunkRecords(chunk: ChunkBody, key: string): ImaRecord[] {
  const records = asStoreError(key, () => parseBinaryList(chunk.records));
  if (records.length !== chunk.count) throw FieldReader.corrupt(key, `holds ${records.length} records, count says ${chunk.count}`);
  return records;
}

/**
 * The check of {@link chunkRecords} without parsing: the body's length fields walk to exactly
 * `count` records and its end. What serves a body as it is (the SHA-1 binary list) calls this.
 */
export function checkChunkBody(chunk: ChunkBody, key: string): void {
  const parser = new BinaryListParser();
  const count = asStoreError(key, () => {
    const n = parser.measure(chunk.records);
    parser.end();
    return n;
  });
  if (count !== chunk.count) throw FieldReader.corrupt(key, `holds ${count} records, count says ${chunk.count}`);
}

/** Runs a parse of a chunk body; an `ImaError` becomes `STORE_CORRUPT` naming the key. */
function asStoreError<T>(key: string, parse: () => T): T {
  try {
    return parse();
  } catch (cause) {
    if (!(cause instanceof ImaError)) throw cause;
    throw new StoreError('STORE_CORRUPT', `${key}: records do not parse (${cause.message})`, { key }, { cause });
  }
}

/** When the open chunk is sealed, whichever comes first. */
export interface ChunkBounds {
  /** Seal once the records take this many bytes. */
  readonly maxBytes: number;
  /** Seal once the oldest unsealed record is this old (ms), so a quiet device still commits. */
  readonly maxAgeMs: number;
}

/**
 * Defaults. 64 KiB: a synced LevelDB put of a 64 KiB chunk costs ~0.43 ms on the reference machine
 * (level 10 on the development VM: 2,298 synced puts/s, 150 MB/s) and durable per-chunk writes cost ~10 % end to
 * end in the streaming ingest (bench/store.ts, bench/ingest.ts); 256 KiB writes faster (274 MB/s) but a reader serving from
 * the middle of a chunk decodes the whole chunk, and the open chunk is held in memory (Invariant 4).
 * ~64 KiB holds ~400 records of ~160 B (docs/ima-formats.md#sizes). 60 s: a quiet device commits what it has within a minute.
 */
export const DEFAULT_CHUNK_BOUNDS: ChunkBounds = { maxBytes: 64 * 1024, maxAgeMs: 60_000 };

/**
 * Accumulates records of the open chunk and says when to seal. Pure: the caller passes the clock.
 * After a successful `appendChunk` of `draft(...)`, call `committed(draft)`; if the commit failed,
 * keep going (the records stay, and the next `draft` includes them).
 *
 * Records are encoded straight into one buffer (no allocation per record); the buffer grows by
 * doubling while commits fail (ENOSPC) and goes back to its usual size once they succeed.
 */
export class ChunkBuilder {
  readonly #bounds: ChunkBounds;
  #firstIndex: number;
  #body: Uint8Array;
  #byteLength = 0;
  #count = 0;
  #openedAt = 0;

  /** Starts the open chunk at global index `firstIndex` (the boot's stored count). */
  constructor(firstIndex: number, bounds: ChunkBounds = DEFAULT_CHUNK_BOUNDS) {
    if (!Number.isSafeInteger(firstIndex) || firstIndex < 0) throw new RangeError(`firstIndex ${firstIndex} is not a non-negative integer`);
    if (!(bounds.maxBytes > 0) || !(bounds.maxAgeMs >= 0)) throw new RangeError('chunk bounds must be positive');
    this.#firstIndex = firstIndex;
    this.#bounds = bounds;
    this.#body = new Uint8Array(usualCapacity(bounds));
  }

  /** Global index of the open chunk's first record. */
  get firstIndex(): number {
    return this.#firstIndex;
  }

  /** Records in the open chunk. */
  get count(): number {
    return this.#count;
  }

  /** Global index the next added record gets. */
  get nextIndex(): number {
    return this.#firstIndex + this.#count;
  }

  /** Bytes of the open chunk's records. */
  get byteLength(): number {
    return this.#byteLength;
  }

  /**
   * Appends the record with global index `nextIndex`; `now` in ms starts the age clock on the first
   * record. Template data must be little-endian (`convertTemplateData` for a big-endian list);
   * throws `IMA_BAD_LENGTH` for a record the list parser would refuse, before anything changes.
   */
  add(record: ImaRecord, now: number): void {
    const size = encodedRecordLength(record);
    if (this.#byteLength + size > this.#body.length) this.#resize(Math.max(this.#body.length * 2, this.#byteLength + size));
    encodeBinaryRecordInto(record, this.#body, this.#byteLength);
    if (this.#count === 0) this.#openedAt = now;
    this.#byteLength += size;
    this.#count++;
  }

  /**
   * Appends `count` whole records given as their bytes in the SHA-1 binary list, little-endian
   * (a run of the kernel's list as a `BinaryListParser` delimited it): the records are their list
   * bytes, so they are copied as they are, in one copy, not encoded one by one (the encoding of
   * {@link add} cost ~1.4 µs per record under load, bench/results/lean.md). `appendChunk` checks
   * the body's length fields when the chunk is committed (`STORE_CORRUPT` if they do not walk to
   * `count` records).
   */
  addRecords(bytes: Uint8Array, count: number, now: number): void {
    if (count <= 0) return;
    if (this.#byteLength + bytes.length > this.#body.length) this.#resize(Math.max(this.#body.length * 2, this.#byteLength + bytes.length));
    this.#body.set(bytes, this.#byteLength);
    if (this.#count === 0) this.#openedAt = now;
    this.#byteLength += bytes.length;
    this.#count += count;
  }

  /** True when the open chunk has records and reached a bound. */
  shouldSeal(now: number): boolean {
    return this.#count > 0 && this.#boundReached(this.#byteLength, this.#openedAt, now);
  }

  /**
   * Would {@link shouldSeal} be true once records of `bytes` bytes more are added at `now`, had
   * the open chunk been sealed `sealedBytes` into them (0: not sealed)? Lets a caller find where
   * the chunks of a run of records end before it adds them.
   */
  sealsAfter(bytes: number, sealedBytes: number, now: number): boolean {
    if (bytes <= sealedBytes) return false;
    if (sealedBytes > 0 || this.#count === 0) return this.#boundReached(bytes - sealedBytes, now, now);
    return this.#boundReached(this.#byteLength + bytes, this.#openedAt, now);
  }

  #boundReached(byteLength: number, openedAt: number, now: number): boolean {
    return byteLength >= this.#bounds.maxBytes || now - openedAt >= this.#bounds.maxAgeMs;
  }

  /** The open chunk as a draft for `appendChunk` (its own copy of the records), with the replay state after its last record. */
  draft(replay: PcrReplayState): ChunkDraft {
    return { firstIndex: this.#firstIndex, count: this.#count, records: this.#body.slice(0, this.#byteLength), replay };
  }

  /**
   * Drops the records of `draft` once it is committed; records added while the commit was in
   * flight stay and open the next chunk.
   */
  committed(draft: ChunkDraft): void {
    if (draft.firstIndex !== this.#firstIndex || draft.count > this.#count || draft.records.length > this.#byteLength) {
      throw new RangeError(`draft ${draft.firstIndex}+${draft.count} is not the open chunk at ${this.#firstIndex}`);
    }
    this.#body.copyWithin(0, draft.records.length, this.#byteLength);
    this.#byteLength -= draft.records.length;
    this.#count -= draft.count;
    this.#firstIndex += draft.count;
    const usual = usualCapacity(this.#bounds);
    if (this.#body.length > 2 * usual && this.#byteLength <= usual) this.#resize(usual);
  }

  #resize(capacity: number): void {
    const body = new Uint8Array(capacity);
    body.set(this.#body.subarray(0, this.#byteLength));
    this.#body = body;
  }
}

/** The open chunk's buffer: the size bound plus room for the record that crosses it. */
function usualCapacity(bounds: ChunkBounds): number {
  return Math.min(bounds.maxBytes, 16 * 1024 * 1024) + 8 * 1024;
}
