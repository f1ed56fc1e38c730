/**
 * The kernel's part of a boot's log: the staged list (after `A`, before `D`) followed by the
 * current list (docs/kernel.md#staging-requests), addressed by global index (Invariant 6: kernel
 * position = global index − T).
 */
import { readFileSync } from 'node:fs';
import type { ImaRecord } from '../ima/index.js';
import { MeasurementListReader, probeSecurityfs, readCounter, type BusyRetryPolicy, type ListPosition, type SecurityfsFiles } from '../kernel/index.js';
import type { ImaStore, StoredRecord } from '../store/index.js';
import { storedBytes } from './stored.js';

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

/** The kernel files {@link openKernelTail} reads (a subset of `KernelCapabilities`). */
export interface KernelTailFiles {
  readonly binaryListPath: string;
  readonly stagedBinaryListPath: string | undefined;
  readonly countPath: string;
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
 * daemon is down): T from the journal, a staged list (left by a crash between `A` and `D`)
 * counted from its file. Nobody removes records meanwhile, so positions stay valid.
 */
export async function openKernelTail(store: ImaStore, boot: number, files: KernelTailFiles, opts: KernelReadOptions = {}): Promise<StandaloneKernelTail> {
  const removed = (await store.journal(boot)).removed;
  let stagedCount: number | null = null;
  if (files.stagedBinaryListPath !== undefined) {
    let count = 0;
    for await (const batch of listReader(files.stagedBinaryListPath, { index: 0, offset: 0 }, opts).drain({ maxBatchRecords: opts.maxBatchRecords })) {
      count += batch.records.length;
    }
    if (count > 0) stagedCount = count;
  }
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
