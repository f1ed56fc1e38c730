/**
 * The removal flavours (design.md "Removal flavours", docs/kernel.md#staging-requests): records
 * leave the kernel only once they are in committed chunks and a stored checkpoint covers them
 * (Invariant 1; the store checks both again before it journals an intent), and every kernel write
 * sits between a synced journal intent and a synced outcome (Invariant 3).
 *
 * - `n`: one writer window that checks the kernel's head and writes "n\n";
 * - `staged`: `A` (the current list becomes the staged list), read and store the staged records,
 *   quote until a checkpoint covers them, `D`.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { ImaRecord } from '../ima/index.js';
import {
  KernelError,
  deleteStaged,
  readCounter,
  removeFirstRecords,
  stageAll,
  type BusyRetryPolicy,
  type KernelCapabilities,
  type RemovalResult,
  type SecurityfsFiles,
} from '../kernel/index.js';
import type { ImaStore, KernelHeadFacts } from '../store/index.js';
import type { CollectorStep, Flavor } from './config.js';
import type { Cycle } from './cycle.js';
import { CollectorError } from './errors.js';
import { listReader, type KernelLists, type KernelReadOptions } from './kernel-log.js';
import type { CollectorMetrics } from './metrics.js';
import { recordIdentity, sameRecord } from './recovery.js';
import { storedBytes, storedRange } from './stored.js';

/** What removal reads, writes and reports to. */
export interface RemovalParts {
  readonly store: ImaStore;
  readonly capabilities: KernelCapabilities;
  readonly files: SecurityfsFiles | undefined;
  readonly busyRetry: BusyRetryPolicy | undefined;
  readonly readOptions: KernelReadOptions;
  readonly lists: KernelLists;
  readonly cycle: Cycle;
  /**
   * Quotes once more (`staged`: until a checkpoint covers the staged list); false when the TPM
   * was reset and a new segment began instead (the collector decides that, not removal).
   */
  readonly attest: () => Promise<boolean>;
  /** Quotes tried, and the pause between them, until a quote covers the staged list. */
  readonly stagedQuoteAttempts: number;
  readonly stagedQuoteDelayMs: number;
  readonly metrics: CollectorMetrics;
  /** Clock (ms since the epoch). */
  readonly now: () => number;
  /** The crash seam: called after each named step. */
  readonly step: (step: CollectorStep) => Promise<void>;
}

/** The code of a kernel error, if `e` is one. */
function kernelCode(e: unknown): string | undefined {
  return e instanceof KernelError ? e.code : undefined;
}

/** Removal by the flavour in use, and why it stopped for the boot. */
export class Removal {
  readonly #parts: RemovalParts;
  #flavor: Flavor;
  /** Why removal is stopped for this boot (a kernel error code), or null. */
  #haltedBy: string | null = null;

  constructor(parts: RemovalParts, flavor: Flavor) {
    this.#parts = parts;
    this.#flavor = flavor;
  }

  /** The flavour in use (`none` once the kernel refused writes with EPERM). */
  get flavor(): Flavor {
    return this.#flavor;
  }

  /** Why removal is stopped for this boot (ESTALE: kexec/reboot under way), or null. */
  get haltedBy(): string | null {
    return this.#haltedBy;
  }

  /** A new boot segment: whatever stopped removal in the last one does not hold in it. */
  resume(): void {
    this.#haltedBy = null;
  }

  /** Removes what is stored and covered (Invariant 1), by the flavour in use. */
  async remove(): Promise<void> {
    if (this.#flavor === 'none' || this.#haltedBy !== null) return;
    try {
      if (this.#parts.lists.stagedCount !== null) await this.#finishStaged();
      else if (this.#flavor === 'n') await this.#removeN();
      else await this.#removeStaged();
    } catch (e) {
      const code = kernelCode(e);
      if (code === 'KERNEL_ESTALE' || code === 'KERNEL_EACCES') {
        // Measurement is suspended: kexec/reboot under way. The records travel to the next kernel,
        // whose boot is a new segment: remove nothing more here (docs/kernel.md#reboot-and-kexec).
        this.#haltedBy = code;
        return;
      }
      if (code === 'KERNEL_EPERM') {
        this.#flavor = 'none';
        this.#haltedBy = code;
        return;
      }
      throw e;
    }
  }

  #kernelWritten(result: { readonly holdMs: number; readonly attempts: number }): void {
    this.#parts.metrics.writerLockHold.add(result.holdMs);
    this.#parts.metrics.busyRetries += result.attempts - 1;
  }

  #removed(records: number): void {
    this.#parts.metrics.recordsRemoved += records;
    this.#parts.metrics.removals++;
  }

  /** Flavour `n`: one writer window that checks the head and writes "n\n" (docs/kernel.md#staging-requests). */
  async #removeN(): Promise<void> {
    const { store, cycle, lists, capabilities, step } = this.#parts;
    const boot = cycle.boot;
    const removed = lists.removed;
    const target = Math.min(cycle.stored, cycle.lastCheckpoint?.count ?? 0);
    const n = target - removed;
    if (n <= 0) return;
    // Everything the lock window needs is read before it: the window is open, read one record, write.
    const bytes = await storedBytes(store, boot, removed, target);
    const [head] = await storedRange(store, boot, removed, 1);
    if (head === undefined) throw new RangeError(`record ${removed} is not stored`);
    const kernelHead = await this.#kernelHeadFacts(head, n, bytes);
    await store.journalIntent(boot, { flavor: 'n', removed, n, at: this.#parts.now(), kernelHead });
    await step('intent-journaled');
    let result: RemovalResult;
    try {
      result = await removeFirstRecords({
        path: capabilities.binaryListPath,
        files: this.#parts.files,
        retry: this.#parts.busyRetry,
        // The window reads one record: a small read keeps it short (the reader reads on for a
        // larger record). Measured in bench/ingest (FUSE emulator, 1M records): hold p50 1.6 ms
        // with the 256 KiB drain read size, 0.39 ms with 4 KiB.
        readSize: 4096,
        decide: (list) => {
          const [first] = list.next(1);
          if (first === undefined || !sameRecord(first, head)) {
            throw new CollectorError('COLLECTOR_KERNEL_DIVERGED', `boot ${boot}: the kernel's first record is not stored record ${removed}; nothing removed`, { boot, index: removed });
          }
          return { n, bytes };
        },
      });
    } catch (e) {
      // Whatever failed, the write did not happen (it is the window's last call): outcome "not done".
      await store.journalOutcome(boot, { done: false });
      // retryOnBusy wraps what `decide` threw as KERNEL_IO; the divergence is the news.
      throw e instanceof KernelError && e.cause instanceof CollectorError ? e.cause : e;
    }
    this.#kernelWritten(result);
    await step('kernel-written');
    await store.journalOutcome(boot, { done: true });
    lists.removedFirst(n, bytes);
    this.#removed(n);
    await step('outcome-journaled');
  }

  /**
   * What recovery needs to decide this removal from one read of the head (store `KernelHeadFacts`):
   * the counter, the first record, and the record at kernel position n (read at the removed
   * records' byte end, known from the store). Read before the intent, outside the writer window:
   * records only append meanwhile, so they still hold at the write (the window checks the head again).
   */
  async #kernelHeadFacts(first: ImaRecord, n: number, bytes: number): Promise<KernelHeadFacts> {
    const { capabilities, files, readOptions } = this.#parts;
    const listed = readCounter(capabilities.countPath, files);
    // One record is wanted: a small read (the reader reads on for a larger record).
    const reader = listReader(capabilities.binaryListPath, { index: n, offset: bytes }, { ...readOptions, readSize: 4096 });
    let next: ImaRecord | undefined;
    for await (const batch of reader.drain({ maxBatchRecords: 1 })) {
      next = batch.records[0];
      break;
    }
    return { listed, first: recordIdentity(first), next: next === undefined ? null : recordIdentity(next) };
  }

  /** Flavour `staged`, first half: `A`, then read and store the staged list. */
  async #removeStaged(): Promise<void> {
    const { store, cycle, lists, capabilities, step } = this.#parts;
    const stagedPath = capabilities.stagedBinaryListPath;
    const boot = cycle.boot;
    if (stagedPath === undefined || cycle.drained <= lists.removed) return; // nothing read: nothing to stage
    await store.journalIntent(boot, { flavor: 'staged', removed: lists.removed, n: 0, at: this.#parts.now() });
    await step('intent-journaled');
    try {
      const result = await stageAll(stagedPath, { files: this.#parts.files, retry: this.#parts.busyRetry });
      this.#kernelWritten(result);
    } catch (e) {
      await store.journalOutcome(boot, { done: false });
      if (kernelCode(e) === 'KERNEL_ENOENT') return; // the current list was empty
      throw e;
    }
    await step('kernel-written');
    const staged = lists.currentStaged(stagedPath);
    await cycle.drainFrom(staged);
    const stagedCount = staged.position.index;
    await store.journalStaged(boot, { step: 'staged', count: stagedCount });
    lists.stagedRead(stagedCount);
    await step('staged-journaled');
    await this.#finishStaged();
  }

  /**
   * Flavour `staged`, second half: commit the staged records, quote until a checkpoint covers
   * them all (the kernel logs before it extends: a quote may lag the list), journal, `D`.
   */
  async #finishStaged(): Promise<void> {
    const { store, cycle, lists, capabilities, step } = this.#parts;
    const stagedPath = capabilities.stagedBinaryListPath;
    const stagedCount = lists.stagedCount;
    if (stagedPath === undefined || stagedCount === null) return;
    const boot = cycle.boot;
    const end = lists.removed + stagedCount;
    if (cycle.drained < end) await cycle.drain();
    await cycle.seal();
    for (let attempt = 0; (cycle.lastCheckpoint?.count ?? 0) < end && attempt < this.#parts.stagedQuoteAttempts; attempt++) {
      await delay(this.#parts.stagedQuoteDelayMs);
      if (!(await this.#parts.attest())) return;
    }
    if ((cycle.lastCheckpoint?.count ?? 0) < end) return; // not covered yet: the next cycle continues
    const journal = await store.journal(boot);
    if (journal.staged?.step !== 'stored') await store.journalStaged(boot, { step: 'stored', count: stagedCount });
    await step('staged-covered');
    try {
      const result = await deleteStaged(stagedPath, { files: this.#parts.files, retry: this.#parts.busyRetry });
      this.#kernelWritten(result);
    } catch (e) {
      // ENOENT: nothing staged any more (deleted by someone else): the records are gone, and stored.
      if (kernelCode(e) !== 'KERNEL_ENOENT') {
        if (kernelCode(e) === 'KERNEL_ESTALE') await store.journalOutcome(boot, { done: false });
        throw e;
      }
    }
    await step('staged-deleted');
    await store.journalOutcome(boot, { done: true });
    lists.stagedDeleted();
    this.#removed(stagedCount);
    await step('outcome-journaled');
  }
}
