/**
 * Incremental reader of a kernel measurement list (docs/kernel.md#reading-the-list).
 *
 * The kernel's seq_file walks the list from its head on every read(2) and returns about one page
 * per call, whatever the buffer size; so a drain opens the file once per batch, reads sequentially
 * with a large buffer until a read returns 0, and keeps its place as (record index, byte offset)
 * for the next drain, which starts there with pread (seq_file positions by byte offset). A record
 * cut at the end of what the kernel returned is "not yet": it is read again, whole, next time.
 */
import { BinaryListParser, binaryRecordLength, type ParsedRecord } from '../ima/binary.js';
import { KernelError, toKernelError } from './errors.js';
import { nodeSecurityfsFiles, type SecurityfsFiles } from './files.js';
import { retryOnBusy, type BusyRetryPolicy } from './retry.js';

/** A place in the kernel's current list: records before it and their byte length. */
export interface ListPosition {
  /** Kernel-list index of the next record (= global index - records removed so far). */
  readonly index: number;
  /** Byte offset of that record in the list file. */
  readonly offset: number;
}

/** Records read in one batch, with where they start and end in the kernel list. */
export interface ListBatch {
  readonly records: readonly ParsedRecord[];
  readonly start: ListPosition;
  readonly end: ListPosition;
}

/** Options of {@link MeasurementListReader}. */
export interface ListReaderOptions {
  /** The list file, normally the SHA-1 binary list (`KernelCapabilities.binaryListPath`). */
  readonly path: string;
  readonly files?: SecurityfsFiles;
  /** Bytes asked per read(2) (default 256 KiB; at least 64 KiB is what makes drains cheap). */
  readonly readSize?: number;
  /** Digest size of the list's bank (default 20, the SHA-1 list). */
  readonly digestSize?: number;
  /** Where to start (default the head of the list). */
  readonly position?: ListPosition;
  /** EBUSY retry of the open (default {@link DEFAULT_BUSY_RETRY}). */
  readonly retry?: BusyRetryPolicy;
}

/** Options of one drain. */
export interface DrainOptions {
  /** Records per batch at most (default 4096): bounds the memory a drain holds. */
  readonly maxBatchRecords?: number;
}

/** Default bytes per read(2). */
export const DEFAULT_READ_SIZE = 256 * 1024;

/**
 * A read gets a fresh buffer when less than this is left in the current one: seq_file returns
 * about a page per read(2) (docs/kernel.md#reading-the-list), so 64 KiB is many reads.
 */
const MIN_READ_ROOM = 64 * 1024;

/** A record with its own copy of its bytes, laid out as in the list (digest and data are views). */
function copyRecord(rec: ParsedRecord): ParsedRecord {
  const bytes = new Uint8Array(rec.digest.length + rec.data.length);
  bytes.set(rec.digest, 0);
  bytes.set(rec.data, rec.digest.length);
  return { pcr: rec.pcr, template: rec.template, digest: bytes.subarray(0, rec.digest.length), data: bytes.subarray(rec.digest.length) };
}

/** Reads new records from a kernel list, batch by batch, remembering where it stopped. */
export class MeasurementListReader {
  readonly path: string;
  readonly #files: SecurityfsFiles;
  readonly #readSize: number;
  readonly #digestSize: number;
  readonly #retry: BusyRetryPolicy;
  #index: number;
  #offset: number;
  #buffer: Uint8Array;

  constructor(opts: ListReaderOptions) {
    this.path = opts.path;
    this.#files = opts.files ?? nodeSecurityfsFiles;
    this.#readSize = opts.readSize ?? DEFAULT_READ_SIZE;
    this.#digestSize = opts.digestSize ?? 20;
    this.#retry = opts.retry ?? {};
    this.#index = opts.position?.index ?? 0;
    this.#offset = opts.position?.offset ?? 0;
    this.#buffer = new Uint8Array(this.#readSize);
  }

  /** Where the next drain starts. */
  get position(): ListPosition {
    return { index: this.#index, offset: this.#offset };
  }

  /**
   * Moves the position back after the kernel removed the first `records` records (`bytes` long)
   * of its list: kernel position = global - removed (design.md invariant 6). After `A`, pass the
   * whole staged list. Throws `KERNEL_POSITION` if that is more than was read.
   */
  rebase(removed: { readonly records: number; readonly bytes: number }): void {
    if (removed.records > this.#index || removed.bytes > this.#offset || removed.records < 0 || removed.bytes < 0) {
      throw new KernelError(
        'KERNEL_POSITION',
        `cannot rebase position ${this.#index}@${this.#offset} by ${removed.records} records / ${removed.bytes} bytes`,
        'EINVAL',
        'read',
        this.path,
      );
    }
    this.#index -= removed.records;
    this.#offset -= removed.bytes;
  }

  /**
   * Reads from the position to the end of the list, in batches. The file is open only while a
   * batch is read, so the consumer's work between batches holds no reader lock (invariant 5). The
   * position advances when a batch is yielded.
   */
  async *drain(opts: DrainOptions = {}): AsyncGenerator<ListBatch, void, undefined> {
    const max = opts.maxBatchRecords ?? 4096;
    for (;;) {
      const { value: batch } = await retryOnBusy(() => this.#readBatch(max), { syscall: 'open', path: this.path }, this.#retry);
      if (batch.records.length === 0) return;
      this.#index = batch.end.index;
      this.#offset = batch.end.offset;
      yield batch;
      if (!batch.full) return;
    }
  }

  /** One open..close on this thread: complete records from the position, at most `max`. */
  #readBatch(max: number): ListBatch & { full: boolean } {
    const files = this.#files;
    let fd: number;
    try {
      fd = files.open(this.path, 'r');
    } catch (err) {
      throw toKernelError(err, 'open', this.path);
    }
    const start: ListPosition = { index: this.#index, offset: this.#offset };
    const parser = new BinaryListParser({ digestSize: this.#digestSize });
    const records: ParsedRecord[] = [];
    let at = this.#offset;
    let bytes = 0;
    let buffer = this.#buffer;
    let filled = 0;
    const keep = (rec: ParsedRecord): void => {
      if (records.length === max) return;
      // A record read whole into `buffer` stays a view of it (the buffer is never written again);
      // one completed from the parser's pending bytes is copied (those bytes are reused).
      records.push(rec.data.buffer === buffer.buffer ? rec : copyRecord(rec));
      bytes += binaryRecordLength(rec);
    };
    try {
      while (records.length < max) {
        // Each read goes to the free tail of the batch's buffer, so records stay views into it
        // (no allocation per record); a fresh buffer when the tail is short. A batch is a few of
        // them (the read size bounds each), given back with the batch (bench/results/lean.md).
        if (this.#readSize - filled < MIN_READ_ROOM) {
          buffer = new Uint8Array(this.#readSize);
          filled = 0;
        }
        let n: number;
        try {
          n = files.read(fd, buffer.subarray(filled), this.#readSize - filled, at);
        } catch (err) {
          throw toKernelError(err, 'read', this.path);
        }
        if (n === 0) break;
        at += n;
        parser.pushEach(buffer.subarray(filled, filled + n), keep);
        filled += n;
      }
    } finally {
      files.close(fd);
    }
    // The records handed out are views into the buffer used last: the next batch reads into a new one.
    this.#buffer = filled === 0 ? buffer : new Uint8Array(this.#readSize);
    const end = { index: start.index + records.length, offset: start.offset + bytes };
    return { records, start, end, full: records.length === max };
  }
}
