/**
 * Segment files: chunk values written once, appended to one file per boot, instead of into
 * LevelDB (docs/store.md#segment-files). LevelDB writes every value it holds at least twice (its
 * log, then a table when the memtable is flushed) and compaction rewrites some again: 2.36x
 * block-layer bytes per chunk value byte for the chunk stream alone. A segment write is the value
 * once plus its last partial page, and LevelDB keeps a ~100-byte reference: 1.13x (`node
 * dist/bench/store.js 100000`), and the collector's 3.0x became 1.15x per raw record byte (`node
 * dist/bench/ingest.js --records 50000`; bench/results/lean.md).
 *
 * The file I/O sits behind {@link ChunkSegments} so tests can swap it to inject faults.
 */
import { constants } from 'node:fs';
import { mkdir, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/** Reads of one boot's segment, from one open file. */
export interface SegmentReader {
  /**
   * The values stored one after another from `offset`, one array of each of `lengths`: what the
   * file holds of them, shorter (or empty) only where the file ends (the caller decides what that
   * means).
   */
  read(offset: number, lengths: readonly number[]): Promise<Uint8Array[]>;
  close(): Promise<void>;
}

/** Where chunk values live when they are not in LevelDB. */
export interface ChunkSegments {
  /**
   * Appends `value` to the boot's segment (creating it) and resolves with its offset once it is on
   * disk (`fdatasync`). After a failed write the file may hold a partial value past the last
   * reference: the next write goes after it, and no reference ever points into it.
   */
  append(boot: number, value: Uint8Array): Promise<number>;
  /** Opens the boot's segment for reading; undefined if it does not exist. */
  reader(boot: number): Promise<SegmentReader | undefined>;
  /** Cuts the boot's segment to `length` bytes if it is longer (a tail no reference points to); nothing if absent. */
  truncate(boot: number, length: number): Promise<void>;
  /** Deletes the boot's segment (nothing if absent). */
  remove(boot: number): Promise<void>;
  /** Boots that have a segment file. */
  boots(): Promise<number[]>;
  close(): Promise<void>;
}

/** The segment open for appending, and its size (where the next value goes). */
interface Writing {
  readonly boot: number;
  readonly file: FileHandle;
  size: number;
}

const SEGMENT_NAME = /^(\d{10})\.seg$/;

function segmentName(boot: number): string {
  return `${String(boot).padStart(10, '0')}.seg`;
}

function isMissing(e: unknown): boolean {
  return typeof e === 'object' && e !== null && 'code' in e && e.code === 'ENOENT';
}

/**
 * {@link ChunkSegments} as files `<boot, 10 digits>.seg` in one directory (`segments/` inside the
 * LevelDB directory: LevelDB ignores names it did not make, leveldb `db_impl.cc`
 * DeleteObsoleteFiles keeps files `ParseFileName` does not recognise). The file appended to last stays
 * open for the next append.
 */
export class SegmentFiles implements ChunkSegments {
  readonly #dir: string;
  #writing: Writing | undefined;

  private constructor(dir: string) {
    this.#dir = dir;
  }

  /** Creates the directory if needed (its entry made durable: fsync of the parent). */
  static async open(dir: string, parent: string): Promise<SegmentFiles> {
    if ((await mkdir(dir, { recursive: true })) !== undefined) await syncDirectory(parent);
    return new SegmentFiles(dir);
  }

  async append(boot: number, value: Uint8Array): Promise<number> {
    const writing = await this.#writer(boot);
    const offset = writing.size;
    try {
      for (let done = 0; done < value.length; ) {
        done += (await writing.file.write(value, done, value.length - done, offset + done)).bytesWritten;
      }
      await writing.file.datasync();
    } catch (e) {
      // How much reached the file is unknown: the next write reopens and appends at its size.
      await this.#closeWriter().catch(() => undefined);
      throw e;
    }
    writing.size = offset + value.length;
    return offset;
  }

  async #writer(boot: number): Promise<Writing> {
    if (this.#writing?.boot === boot) return this.#writing;
    await this.#closeWriter();
    const path = join(this.#dir, segmentName(boot));
    let file: FileHandle;
    try {
      file = await open(path, constants.O_RDWR);
    } catch (e) {
      if (!isMissing(e)) throw e;
      // A new file: its directory entry must be on disk before a reference to it is (fsync(2) NOTES).
      file = await open(path, constants.O_RDWR | constants.O_CREAT, 0o600);
      await syncDirectory(this.#dir);
    }
    this.#writing = { boot, file, size: (await file.stat()).size };
    return this.#writing;
  }

  async #closeWriter(): Promise<void> {
    const writing = this.#writing;
    this.#writing = undefined;
    await writing?.file.close();
  }

  async reader(boot: number): Promise<SegmentReader | undefined> {
    let file: FileHandle;
    try {
      file = await open(join(this.#dir, segmentName(boot)), constants.O_RDONLY);
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
    return {
      async read(offset: number, lengths: readonly number[]): Promise<Uint8Array[]> {
        // One preadv(2) into a buffer of each value's own size, not a read per value: a read costs
        // ~60 µs of CPU besides the copy (a trip to libuv's thread pool and back), so 64 KiB reads of
        // a cached segment ran at 930 MB per CPU-second and 16 values per read at 3,770. A shared
        // window copied out instead would cost a copy, and a new 1 MiB window per read is an mmap
        // and its page faults under the daemon's malloc settings (220 MB per CPU-second;
        // bench/results/lean.md).
        const buffers = lengths.map((length) => Buffer.allocUnsafe(length));
        const total = lengths.reduce((sum, length) => sum + length, 0);
        let done = 0;
        while (done < total) {
          const { bytesRead } = await file.readv(unfilled(buffers, done), offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return filled(buffers, done);
      },
      close: () => file.close(),
    };
  }

  async truncate(boot: number, length: number): Promise<void> {
    if (this.#writing?.boot === boot) await this.#closeWriter();
    const path = join(this.#dir, segmentName(boot));
    try {
      const file = await open(path, constants.O_RDWR);
      try {
        if ((await file.stat()).size > length) {
          await file.truncate(length);
          await file.datasync();
        }
      } finally {
        await file.close();
      }
    } catch (e) {
      if (!isMissing(e)) throw e;
    }
  }

  async remove(boot: number): Promise<void> {
    if (this.#writing?.boot === boot) await this.#closeWriter();
    await rm(join(this.#dir, segmentName(boot)), { force: true });
  }

  async boots(): Promise<number[]> {
    const names = await readdir(this.#dir);
    return names.flatMap((name) => {
      const m = SEGMENT_NAME.exec(name);
      return m?.[1] === undefined ? [] : [Number(m[1])];
    });
  }

  close(): Promise<void> {
    return this.#closeWriter();
  }
}

/** The parts of `buffers` (laid end to end) after their first `done` bytes. */
function unfilled(buffers: readonly Buffer[], done: number): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const buffer of buffers) {
    if (at + buffer.length > done) out.push(done > at ? buffer.subarray(done - at) : buffer);
    at += buffer.length;
  }
  return out;
}

/** `buffers` (laid end to end) cut to their first `done` bytes. */
function filled(buffers: readonly Buffer[], done: number): Buffer[] {
  let at = 0;
  return buffers.map((buffer) => {
    const part = buffer.subarray(0, Math.max(0, Math.min(buffer.length, done - at)));
    at += buffer.length;
    return part;
  });
}

/** fsync of a directory, so entries created or removed in it survive a crash (fsync(2) NOTES). */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
