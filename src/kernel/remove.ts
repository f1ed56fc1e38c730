/**
 * Removing records from kernel memory through the 7.2 interface (docs/kernel.md#staging-requests).
 *
 * Every request is one open..write..close of a read-write descriptor on the calling thread (the
 * writer exemption keys on the thread, docs/kernel.md#the-writer-lock; see files.ts). While it is open, every other open of
 * any list file fails with EBUSY, so the window is kept to the read-decide-write of one removal
 * and its length is measured and returned (design.md invariant 5).
 */
import { performance } from 'node:perf_hooks';
import { BinaryListParser, binaryRecordLength, type ParsedRecord } from '../ima/binary.js';
import { KernelError, toKernelError } from './errors.js';
import { nodeSecurityfsFiles, type SecurityfsFiles } from './files.js';
import { DEFAULT_READ_SIZE } from './reader.js';
import { retryOnBusy, type BusyRetryPolicy } from './retry.js';

/** A request written to a list file (docs/kernel.md#staging-requests). */
type KernelRequest = 'A' | 'D' | { readonly n: number };

/** Outcome of one request. */
export interface RequestResult {
  /** How long the writer lock was held (open to close), in ms. */
  readonly holdMs: number;
  /** Opens tried (EBUSY retries + 1). */
  readonly attempts: number;
}

/** Outcome of {@link removeFirstRecords}. */
export interface RemovalResult extends RequestResult {
  /** Records removed from the head of the current list (0 when the decision was 0). */
  readonly removed: number;
  /** Their bytes in the SHA-1 binary list: what `MeasurementListReader.rebase` needs. */
  readonly removedBytes: number;
}

/** The current list as seen through the writer's descriptor, inside the lock window. */
export interface LockedList {
  /** The next `max` records from the head (continuing where the previous call stopped). */
  next(max: number): readonly ParsedRecord[];
  /** Records returned by `next` so far. */
  readonly recordsRead: number;
}

/** How many records to remove, optionally with their byte length in the SHA-1 binary list. */
export type RemovalDecision = number | { readonly n: number; readonly bytes: number };

/** Options shared by the requests. */
export interface RequestOptions {
  readonly files?: SecurityfsFiles;
  readonly retry?: BusyRetryPolicy;
}

/** Options of {@link removeFirstRecords}. */
export interface RemoveFirstOptions extends RequestOptions {
  /** The original SHA-1 binary list (`KernelCapabilities.binaryListPath`). */
  readonly path: string;
  /**
   * Called inside the lock window, synchronously (no await: the lock is held): read what is needed
   * to confirm the head of the list is what the caller stored, and return how many records to
   * remove (0 = none). Returning `{ n, bytes }` (their SHA-1 binary length, known from the store)
   * spares reading n records inside the window: on a real kernel every read(2) walks the list from
   * its head (docs/kernel.md#reading-the-list), so that is what keeps a large removal's window short.
   */
  readonly decide: (list: LockedList) => RemovalDecision;
  /** Bytes per read(2) (default 256 KiB). */
  readonly readSize?: number;
}

function requestText(req: KernelRequest): string {
  if (req === 'A' || req === 'D') return `${req}\n`;
  return `${req.n}\n`;
}

/** Writes one request through an open descriptor; errors become KernelError. */
function writeRequestTo(files: SecurityfsFiles, fd: number, path: string, req: KernelRequest): void {
  const bytes = new TextEncoder().encode(requestText(req));
  try {
    const n = files.write(fd, bytes);
    if (n !== bytes.length) {
      throw new KernelError('KERNEL_IO', `write ${path}: ${n} of ${bytes.length} bytes accepted`, 'EIO', 'write', path);
    }
  } catch (err) {
    throw toKernelError(err, 'write', path);
  }
}

/** Opens `path` read-write, runs `body` with the descriptor, closes; returns the hold time (open to close). */
function withWriter<T>(files: SecurityfsFiles, path: string, body: (fd: number) => T): { value: T; holdMs: number } {
  let fd: number;
  try {
    fd = files.open(path, 'r+');
  } catch (err) {
    throw toKernelError(err, 'open', path);
  }
  const t0 = performance.now();
  let value: T;
  try {
    value = body(fd);
  } finally {
    closeQuietly(files, fd);
  }
  return { value, holdMs: performance.now() - t0 };
}

/**
 * close(2) of a securityfs file releases the lock whatever it returns, and cannot undo a write
 * that succeeded: its error is of no use to the caller (and must not hide the body's error).
 */
function closeQuietly(files: SecurityfsFiles, fd: number): void {
  try {
    files.close(fd);
  } catch {
    // see above
  }
}

/** One open..write..close with EBUSY retry. */
async function request(path: string, req: KernelRequest, opts: RequestOptions): Promise<RequestResult> {
  const files = opts.files ?? nodeSecurityfsFiles;
  const { value, attempts } = await retryOnBusy(
    () => withWriter(files, path, (fd) => writeRequestTo(files, fd, path, req)),
    { syscall: 'open', path },
    opts.retry,
  );
  return { holdMs: value.holdMs, attempts };
}

/**
 * Flavour `staged`, step 1: `"A\n"` to the `_staged` file moves the whole current list to the
 * staged list. `KERNEL_EEXIST`: a staged list is already there (recover it first);
 * `KERNEL_ENOENT`: nothing to stage; `KERNEL_EACCES`: measurement suspended (kexec/reboot).
 */
export function stageAll(stagedPath: string, opts: RequestOptions = {}): Promise<RequestResult> {
  return request(stagedPath, 'A', opts);
}

/**
 * Flavour `staged`, last step: `"D\n"` deletes the staged list (after it was stored and quoted).
 * `KERNEL_ENOENT`: nothing staged; `KERNEL_ESTALE`: kexec/reboot under way, the staged records
 * travel to the next kernel: do not store them twice (docs/kernel.md#reboot-and-kexec).
 */
export function deleteStaged(stagedPath: string, opts: RequestOptions = {}): Promise<RequestResult> {
  return request(stagedPath, 'D', opts);
}

/**
 * Flavour `n`: inside one writer window, let `decide` read the head of the current list and
 * choose n, then write `"n\n"`. n must not exceed the records the window read (their byte length
 * is what the reader rebases by); asking more throws `KERNEL_ENOENT` without writing.
 * `KERNEL_ESTALE`: kexec/reboot under way, nothing was removed.
 */
export async function removeFirstRecords(opts: RemoveFirstOptions): Promise<RemovalResult> {
  const files = opts.files ?? nodeSecurityfsFiles;
  const path = opts.path;
  const readSize = opts.readSize ?? DEFAULT_READ_SIZE;
  const { value, attempts } = await retryOnBusy(
    () =>
      withWriter(files, path, (fd) => {
        const list = new LockedListReader(files, fd, path, readSize);
        const decision = opts.decide(list);
        const n = typeof decision === 'number' ? decision : decision.n;
        const known = typeof decision === 'number' ? undefined : decision.bytes;
        if (!Number.isSafeInteger(n) || n < 0 || (known !== undefined && (!Number.isSafeInteger(known) || known < 0))) {
          throw new KernelError('KERNEL_EINVAL', `decide returned ${JSON.stringify(decision)}, not a record count`, 'EINVAL', 'write', path);
        }
        if (n === 0) return { removed: 0, removedBytes: 0 };
        const removedBytes = known ?? list.bytesOfFirst(n);
        writeRequestTo(files, fd, path, { n });
        return { removed: n, removedBytes };
      }),
    { syscall: 'open', path },
    opts.retry,
  );
  return { ...value.value, holdMs: value.holdMs, attempts };
}

/** {@link LockedList} over the writer's descriptor; keeps only cumulative byte lengths. */
class LockedListReader implements LockedList {
  readonly #parser = new BinaryListParser();
  readonly #buffer: Uint8Array;
  #pending: ParsedRecord[] = [];
  #at = 0;
  #eof = false;
  /** byteEnd[i] = byte offset of the end of record i (records handed out or buffered). */
  readonly #byteEnd: number[] = [];
  #returned = 0;

  constructor(
    readonly files: SecurityfsFiles,
    readonly fd: number,
    readonly path: string,
    readSize: number,
  ) {
    this.#buffer = new Uint8Array(readSize);
  }

  get recordsRead(): number {
    return this.#returned;
  }

  next(max: number): readonly ParsedRecord[] {
    while (this.#pending.length < max && this.#fill(true)) {
      // keep reading until enough records or the end of the list
    }
    const out = this.#pending.slice(0, max);
    this.#pending = this.#pending.slice(out.length);
    this.#returned += out.length;
    return out;
  }

  /** Byte length of the first `n` records, reading on if needed; KERNEL_ENOENT past the end. */
  bytesOfFirst(n: number): number {
    while (this.#byteEnd.length < n && this.#fill(false)) {
      // read on, counting bytes only: the caller did not ask for these records
    }
    const end = this.#byteEnd[n - 1];
    if (end === undefined) {
      throw new KernelError('KERNEL_ENOENT', `asked to remove ${n} records, the list holds ${this.#byteEnd.length}`, 'ENOENT', 'write', this.path);
    }
    return end;
  }

  /** One read(2), its records kept for `next` if `keep`; false at the end of the list. */
  #fill(keep: boolean): boolean {
    if (this.#eof) return false;
    let n: number;
    try {
      n = this.files.read(this.fd, this.#buffer, this.#buffer.length, this.#at);
    } catch (err) {
      throw toKernelError(err, 'read', this.path);
    }
    if (n === 0) {
      this.#eof = true;
      return false;
    }
    this.#at += n;
    for (const rec of this.#parser.push(this.#buffer.subarray(0, n))) {
      this.#byteEnd.push((this.#byteEnd.at(-1) ?? 0) + binaryRecordLength(rec));
      if (keep) this.#pending.push(rec);
    }
    return true;
  }
}
