/**
 * Incremental reader of a kernel measurement list (docs/kernel.md#reading-the-list).
 *
 * The kernel's seq_file walks the list from its head on every read(2) and returns about one page
 * per call, whatever the buffer size; so a drain opens the file once per batch, reads sequentially
 * with a large buffer until a read returns 0, and keeps its place as (record index, byte offset)
 * for the next drain, which starts there with pread (seq_file positions by byte offset). A record
 * cut at the end of what the kernel returned is "not yet": it is read again, whole, next time.
 */
import { BinaryListParser, type ParsedRecord } from '../ima/binary.js';
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

/**
 * Records read in one batch as the bytes the kernel returned: `parts`, in list order, each a run
 * of whole records (a record the kernel returned across two reads is copied into a part of its
 * own). Together they are the list's bytes from `start` to `end`, `end.index - start.index` records.
 */
export interface ListBytesBatch {
  readonly parts: readonly Uint8Array[];
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
    for await (const { parts, start, end } of this.drainBytes(opts)) {
      const records: ParsedRecord[] = [];
      // Views into the parts, which are never written again.
      for (const part of parts) new BinaryListParser({ digestSize: this.#digestSize }).pushEach(part, (rec) => records.push(rec));
      yield { records, start, end };
    }
  }

  /**
   * {@link drain} with each batch as the list's bytes: a consumer that walks the records itself
   * makes no object per record that lives longer than its own use of it. The collector does: a
   * batch of 4,096 record objects, alive across the young generation's scavenges under the
   * daemon's 1 MiB semi-space, was copied and promoted by each (bench/results/lean.md).
   */
  async *drainBytes(opts: DrainOptions = {}): AsyncGenerator<ListBytesBatch, void, undefined> {
    const max = opts.maxBatchRecords ?? 4096;
    for (;;) {
      const { value: batch } = await retryOnBusy(() => this.#readBatch(max), { syscall: 'open', path: this.path }, this.#retry);
      if (batch.end.index === batch.start.index) return;
      this.#index = batch.end.index;
      this.#offset = batch.end.offset;
      yield batch;
      if (!batch.full) return;
    }
  }

  /** One open..close on this thread: complete records from the position, at most `max`. */
  #readBatch(max: number): ListBytesBatch & { full: boolean } {
    const files = this.#files;
    let fd: number;
    try {
      fd = files.open(this.path, 'r');
    } catch (err) {
      throw toKernelError(err, 'open', this.path);
    }
    const start: ListPosition = { index: this.#index, offset: this.#offset };
    const parser = new BinaryListParser({ digestSize: this.#digestSize });
    const parts: Uint8Array[] = [];
    let count = 0;
    let at = this.#offset;
    let bytes = 0;
    let buffer = this.#buffer;
    let filled = 0;
    // The run of whole records read in place into `buffer`, not yet in `parts`: [runStart, runEnd).
    let runStart = 0;
    let runEnd = 0;
    const endRun = (): void => {
      if (runEnd > runStart) parts.push(buffer.subarray(runStart, runEnd));
      runStart = runEnd;
    };
    const keep = (buf: Uint8Array, from: number, next: number): void => {
      if (count === max) return;
      count++;
      bytes += next - from;
      const inPlace = buf.buffer === buffer.buffer ? buf.byteOffset - buffer.byteOffset + from : -1;
      if (inPlace >= 0 && inPlace === runEnd) {
        runEnd += next - from;
        return;
      }
      endRun();
      if (inPlace >= 0) {
        runStart = inPlace;
        runEnd = inPlace + next - from;
      } else {
        // Completed from the parser's pending bytes, which it reuses: copied. The run stays
        // empty until the next record read in place starts one.
        parts.push(buf.slice(from, next));
      }
    };
    try {
      while (count < max) {
        // Each read goes to the free tail of the batch's buffer, so records stay in it (no
        // allocation per record); a fresh buffer when the tail is short. A batch is a few of
        // them (the read size bounds each), given back with the batch (bench/results/lean.md).
        if (this.#readSize - filled < MIN_READ_ROOM) {
          endRun();
          buffer = new Uint8Array(this.#readSize);
          filled = 0;
          runStart = runEnd = 0;
        }
        let n: number;
        try {
          n = files.read(fd, buffer.subarray(filled), this.#readSize - filled, at);
        } catch (err) {
          throw toKernelError(err, 'read', this.path);
        }
        if (n === 0) break;
        at += n;
        parser.pushSpans(buffer.subarray(filled, filled + n), keep);
        filled += n;
      }
      endRun();
    } finally {
      files.close(fd);
    }
    // The parts handed out are views into the buffer used last: the next batch reads into a new one.
    this.#buffer = filled === 0 ? buffer : new Uint8Array(this.#readSize);
    const end = { index: start.index + count, offset: start.offset + bytes };
    return { parts, start, end, full: count === max };
  }
}
