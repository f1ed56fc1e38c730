/**
 * The kernel's part of a boot's log: the staged list (after `A`, before `D`) followed by the
 * current list (docs/kernel.md#staging-requests), addressed by global index (Invariant 6: kernel
 * position = global index − T).
 */
import { readFileSync } from 'node:fs';
import type { ImaRecord } from '../ima/index.js';
import { MeasurementListReader, probeSecurityfs, readCounter, type BusyRetryPolicy, type ListPosition, type SecurityfsFiles } from '../kernel/index.js';
import { replayAt, type ImaStore, type StoredRecord } from '../store/index.js';
import { CollectorError } from './errors.js';
import { resolveJournal, type RecoveryKernelReads, type RecoveryPauseReason, type RecoveryReads, type RecoveryTpmReads } from './recovery.js';
import { storedBytes, storedRange } from './stored.js';

/** One kernel list file and the global index of its first record. */
export interface KernelSegment {
  readonly path: string;
  readonly first: number;
}

/** Where a boot's records are in the kernel now. */
export interface KernelLayout {
  /** T: records removed so far. */
  readonly removed: number;
  /** Records in the staged list, or null when there is none. */
  readonly stagedCount: number | null;
  /** The current SHA-1 binary list. */
  readonly currentPath: string;
  /** Its `_staged` twin (needed when `stagedCount` is not null). */
  readonly stagedPath: string | undefined;
}

/** The kernel list files of a layout, staged first, with their first global index. */
export function kernelSegments(layout: KernelLayout): KernelSegment[] {
  const { removed, stagedCount, stagedPath, currentPath } = layout;
  if (stagedCount === null || stagedPath === undefined) return [{ path: currentPath, first: removed }];
  return [
    { path: stagedPath, first: removed },
    { path: currentPath, first: removed + stagedCount },
  ];
}

/** How to read kernel lists. */
export interface KernelReadOptions {
  readonly files?: SecurityfsFiles;
  readonly readSize?: number;
  readonly retry?: BusyRetryPolicy;
  /** Records per batch (bounds memory). */
  readonly maxBatchRecords?: number;
}

/** A reader of `path` positioned at kernel index `index` (byte offset `offset`). */
export function listReader(path: string, position: ListPosition, opts: KernelReadOptions): MeasurementListReader {
  return new MeasurementListReader({ path, position, files: opts.files, readSize: opts.readSize, retry: opts.retry });
}

/**
 * Records still in the kernel from global index `from` on, in batches, given that records up to
 * `storedCount` are stored (they give the byte offset to start reading at, so no record before it
 * is read from the kernel). Records before `from` are skipped. The caller keeps T fixed while it
 * reads (no removal in between). `storedAt`, when the caller knows it (the collector's drain
 * position), is where record `storedCount` starts in the last segment: it spares summing the
 * stored records' lengths, which costs a read of every stored record still in the kernel.
 */
export async function* kernelTail(
  store: ImaStore,
  boot: number,
  layout: KernelLayout,
  storedCount: number,
  from: number,
  opts: KernelReadOptions = {},
  storedAt?: ListPosition,
): AsyncGenerator<StoredRecord[]> {
  const segments = kernelSegments(layout);
  const start = Math.max(from, storedCount);
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i];
    if (seg === undefined) continue;
    const next = segments[i + 1];
    if (next !== undefined && next.first <= storedCount) continue; // wholly stored
    const at = Math.max(0, storedCount - seg.first);
    const known = next === undefined && storedAt !== undefined && storedAt.index === at ? storedAt : undefined;
    const position = known ?? { index: at, offset: at === 0 ? 0 : await storedBytes(store, boot, seg.first, seg.first + at) };
    const reader = listReader(seg.path, position, opts);
    for await (const batch of reader.drain({ maxBatchRecords: opts.maxBatchRecords })) {
      const out: StoredRecord[] = [];
      batch.records.forEach((record: ImaRecord, j) => {
        const index = seg.first + batch.start.index + j;
        if (index >= start) out.push({ index, record });
      });
      if (out.length > 0) yield out;
    }
  }
}

/**
 * The collector's readers of the kernel's lists, and where the boot's records are in them: records
 * before `removed` are gone from the kernel, the staged list (when there is one) holds the next
 * `stagedCount`, the current list the rest. The readers stand at the drain position: the next
 * record to read. Only the collector's removal moves `removed` and the staged list, and only
 * through the methods below, each after the kernel write it mirrors (Invariant 3).
 */
export class KernelLists {
  readonly #files: KernelTailFiles;
  readonly #readOptions: KernelReadOptions;
  #removed = 0;
  #stagedCount: number | null = null;
  #currentList: MeasurementListReader;
  #stagedList: MeasurementListReader | null = null;

  constructor(files: KernelTailFiles, readOptions: KernelReadOptions) {
    this.#files = files;
    this.#readOptions = readOptions;
    this.#currentList = listReader(files.binaryListPath, { index: 0, offset: 0 }, readOptions);
  }

  /** Records of the boot removed from the kernel so far (design.md's T). */
  get removed(): number {
    return this.#removed;
  }

  /** Records in the staged list, or null when there is none. */
  get stagedCount(): number | null {
    return this.#stagedCount;
  }

  /** The reader of the current list. */
  get currentList(): MeasurementListReader {
    return this.#currentList;
  }

  /** Where the records are, for {@link kernelTail}. */
  layout(): KernelLayout {
    return { removed: this.#removed, stagedCount: this.#stagedCount, currentPath: this.#files.binaryListPath, stagedPath: this.#files.stagedBinaryListPath };
  }

  /** Sets what recovery decided (the readers stay where they were until {@link positionAfter}). */
  settle(removed: number, stagedCount: number | null): void {
    this.#removed = removed;
    this.#stagedCount = stagedCount;
  }

  /** Positions the readers at stored record `stored` (the byte offsets are the stored records' lengths). */
  async positionAfter(store: ImaStore, boot: number, stored: number): Promise<void> {
    const removed = this.#removed;
    const stagedCount = this.#stagedCount;
    const at = async (first: number): Promise<ListPosition> => ({ index: stored - first, offset: await storedBytes(store, boot, first, stored) });
    const stagedPath = this.#files.stagedBinaryListPath;
    if (stagedCount !== null && stagedPath !== undefined) {
      const inStaged = stored < removed + stagedCount;
      this.#stagedList = listReader(stagedPath, inStaged ? await at(removed) : { index: stagedCount, offset: await storedBytes(store, boot, removed, removed + stagedCount) }, this.#readOptions);
      this.#currentList = listReader(this.#files.binaryListPath, inStaged ? { index: 0, offset: 0 } : await at(removed + stagedCount), this.#readOptions);
    } else {
      this.#stagedList = null;
      this.#currentList = listReader(this.#files.binaryListPath, await at(removed), this.#readOptions);
    }
  }

  /** The readers a drain reads, in order, when records up to `drained` were read: the staged list while inside it, then the current list. */
  toDrain(drained: number): MeasurementListReader[] {
    const staged = this.#stagedList;
    const stagedCount = this.#stagedCount;
    return staged !== null && stagedCount !== null && drained < this.#removed + stagedCount ? [staged, this.#currentList] : [this.#currentList];
  }

  /** Flavour `n` wrote: the first `n` records (`bytes` bytes) left the current list. */
  removedFirst(n: number, bytes: number): void {
    this.#removed += n;
    this.#currentList.rebase({ records: n, bytes });
  }

  /**
   * Flavour `staged` wrote `A`: the current list became the staged list (read on there from the
   * same position); the new current list is empty. Returns the staged list's reader.
   */
  currentStaged(stagedPath: string): MeasurementListReader {
    const staged = listReader(stagedPath, this.#currentList.position, this.#readOptions);
    this.#stagedList = staged;
    this.#currentList = listReader(this.#files.binaryListPath, { index: 0, offset: 0 }, this.#readOptions);
    return staged;
  }

  /** The staged list, read to its end, holds `count` records (journaled). */
  stagedRead(count: number): void {
    this.#stagedCount = count;
  }

  /** Flavour `staged` wrote `D`: the staged records left the kernel. */
  stagedDeleted(): void {
    this.#removed += this.#stagedCount ?? 0;
    this.#stagedCount = null;
    this.#stagedList = null;
  }
}

/** The kernel files recovery and {@link openKernelTail} read (a subset of `KernelCapabilities`). */
export interface KernelTailFiles {
  readonly binaryListPath: string;
  readonly stagedBinaryListPath: string | undefined;
  readonly countPath: string;
}

/** Records of a list file, counted by reading it whole in batches. */
async function listLength(path: string, opts: KernelReadOptions): Promise<number> {
  let count = 0;
  for await (const batch of listReader(path, { index: 0, offset: 0 }, opts).drain({ maxBatchRecords: opts.maxBatchRecords })) count += batch.records.length;
  return count;
}

/** The kernel reads of recovery (recovery.ts) on the files of `files`. */
export function kernelRecoveryReads(files: KernelTailFiles, opts: KernelReadOptions): RecoveryKernelReads {
  return {
    stagedListLength: async () => (files.stagedBinaryListPath === undefined ? 0 : listLength(files.stagedBinaryListPath, opts)),
    async currentHead(max) {
      // The counter first: read before the records, it is a lower bound of the list the read sees.
      const count = readCounter(files.countPath, opts.files);
      const reader = listReader(files.binaryListPath, { index: 0, offset: 0 }, opts);
      for await (const batch of reader.drain({ maxBatchRecords: max + 1 })) {
        return { count, records: batch.records.slice(0, max), complete: batch.records.length <= max };
      }
      return { count, records: [], complete: true };
    },
    async *currentList() {
      const reader = listReader(files.binaryListPath, { index: 0, offset: 0 }, opts);
      for await (const batch of reader.drain({ maxBatchRecords: opts.maxBatchRecords })) yield batch.records;
    },
  };
}

/** Everything {@link resolveJournal} reads, for `boot` of `store` on the kernel files `files`. */
export function recoveryReads(
  store: ImaStore,
  boot: number,
  files: KernelTailFiles,
  opts: KernelReadOptions,
  tpm?: RecoveryTpmReads,
): RecoveryReads {
  return {
    kernel: kernelRecoveryReads(files, opts),
    storedRange: (from, max) => storedRange(store, boot, from, max),
    replayAt: async (count) => (await replayAt(store, boot, count, (await store.bootRecord(boot)).bankModes)).toState(),
    tpm,
  };
}

/** The error of a path that serves when the pending removal is undecided: no silent gap. */
export function recoveryPending(boot: number, resolution: { readonly removed: number; readonly reason: RecoveryPauseReason; readonly message: string }): CollectorError {
  return new CollectorError(
    'COLLECTOR_RECOVERY_FAILED',
    `boot ${boot}: the pending removal at record ${resolution.removed} is undecided (${resolution.reason}): ${resolution.message}; the kernel's records are not served until it is`,
    { boot, index: resolution.removed, reason: resolution.reason },
  );
}

/** Records of the kernel's part of a boot's log, in batches with the global index of the first. */
export interface StandaloneKernelTail {
  readonly boot: number;
  /** Global index one past the kernel's last record now. */
  end(): Promise<number>;
  records(from: number): AsyncIterable<{ readonly firstIndex: number; readonly records: readonly ImaRecord[] }>;
}

/**
 * The kernel tail of `boot` for a reader without a running collector (`imakeep log` while the
 * daemon is down): the journal resolved against the kernel as the collector resolves it at start
 * (a removal journaled without outcome decided, a staged list found or gone), without writing.
 * Nobody removes records meanwhile, so positions stay valid. Throws `COLLECTOR_RECOVERY_FAILED`
 * (with `details.reason`) when the pending removal cannot be decided without the daemon.
 */
export async function openKernelTail(store: ImaStore, boot: number, files: KernelTailFiles, opts: KernelReadOptions = {}): Promise<StandaloneKernelTail> {
  const resolution = await resolveJournal(await store.journal(boot), recoveryReads(store, boot, files, opts));
  if (!resolution.settled) throw recoveryPending(boot, resolution);
  const { removed, stagedCount } = resolution;
  const layout: KernelLayout = { removed, stagedCount, currentPath: files.binaryListPath, stagedPath: files.stagedBinaryListPath };
  return {
    boot,
    async end() {
      return removed + (stagedCount ?? 0) + readCounter(files.countPath, opts.files);
    },
    async *records(from) {
      const stored = await store.storedCount(boot);
      for await (const batch of kernelTail(store, boot, layout, stored, from, opts)) {
        const first = batch[0];
        if (first !== undefined) yield { firstIndex: first.index, records: batch.map((r) => r.record) };
      }
    },
  };
}

/**
 * The kernel tail of the store's current boot for `imakeep log` and `imakeep serve` without a
 * running collector, if the running kernel is that boot's (the boot id read from `bootIdPath`
 * matches the boot's); undefined when the store has no boot or the kernel is another boot's.
 */
export async function runningKernelTail(store: ImaStore, securityfsRoot: string, bootIdPath: string): Promise<StandaloneKernelTail | undefined> {
  const current = store.currentBoot;
  if (current === undefined) return undefined;
  if ((await store.bootRecord(current)).kernelBootId !== readFileSync(bootIdPath, 'latin1').trim()) return undefined;
  return openKernelTail(store, current, probeSecurityfs({ root: securityfsRoot, checkWriteOpen: false }));
}
