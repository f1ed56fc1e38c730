/**
 * The collector of one device: the cycle of design.md (drain, chunk, quote, match, remove), with
 * recovery at start, boot segments and scheduling. It composes the rooms that do each job:
 * segments.ts (which boot segment), recovery.ts (the journal decided), kernel-log.ts (where the
 * boot's records are in the kernel, and the tail read for serving), cycle.ts (read, chunk, quote,
 * match), removal.ts (the `n` and `staged` flavours), schedule.ts (when), status.ts (what it reports).
 *
 * Order is what makes it safe. A record leaves the kernel only after the chunk holding it was
 * committed with a synced write and a stored checkpoint covers it (Invariant 1). Every kernel
 * write sits between a synced journal intent and a synced outcome (Invariant 3). In-memory state
 * changes only after the write it mirrors reached disk, so a failed write (ENOSPC) leaves the
 * collector where it was.
 */
import { SerialQueue } from '../base/serial-queue.js';
import type { ImaRecord } from '../ima/index.js';
import { probeSecurityfs, readCounter, type KernelCapabilities } from '../kernel/index.js';
import { adoptDeviceId, type ImaStore, type StoredRecord } from '../store/index.js';
import { COLLECTOR_DEFAULTS, chooseFlavor, type CollectorOptions, type CollectorStep } from './config.js';
import { Cycle, type Attestation } from './cycle.js';
import { CollectorError } from './errors.js';
import { KernelLists, kernelTail, recoveryPending, recoveryReads, type KernelReadOptions } from './kernel-log.js';
import { CollectorMetrics } from './metrics.js';
import { pcrsByBank, settleJournal } from './recovery.js';
import { Removal } from './removal.js';
import { cycleSchedule, endsRun, errorCode, waitForCycle, type CycleSchedule } from './schedule.js';
import { beginAfterTpmReset, inBanks, openBootSegment, readKernelBootId, type BootSegment } from './segments.js';
import { writeStatusFile, type CollectorCondition, type CollectorStatus, type CycleReport, type RecoveryPause } from './status.js';

/** The collector of one device. Open with {@link Collector.open}. */
export class Collector {
  readonly #options: CollectorOptions;
  readonly #store: ImaStore;
  readonly #capabilities: KernelCapabilities;
  readonly #readOptions: KernelReadOptions;
  readonly #flavorReason: string;
  readonly #schedule: CycleSchedule;
  readonly #metrics = new CollectorMetrics();
  /** The cycle and kernel-tail reads run one at a time: the removed count must not move under a reader. */
  readonly #serial = new SerialQueue();
  readonly #clock: () => number;
  readonly #imaPcr: number;
  readonly #lists: KernelLists;
  readonly #cycle: Cycle;
  readonly #removal: Removal;
  #recoveryPause: RecoveryPause | null = null;
  #condition: CollectorCondition | null = null;
  #closed = false;

  private constructor(options: CollectorOptions, capabilities: KernelCapabilities) {
    const flavor = chooseFlavor(options.flavor ?? 'auto', capabilities);
    this.#options = options;
    this.#store = options.store;
    this.#capabilities = capabilities;
    this.#flavorReason = flavor.reason;
    this.#schedule = cycleSchedule(options);
    this.#clock = options.now ?? Date.now;
    this.#imaPcr = options.pcr ?? COLLECTOR_DEFAULTS.pcr;
    this.#readOptions = {
      files: options.files,
      readSize: options.readSize ?? COLLECTOR_DEFAULTS.readSize,
      retry: options.busyRetry,
      maxBatchRecords: options.readWindowRecords ?? COLLECTOR_DEFAULTS.readWindowRecords,
    };
    const step = async (name: CollectorStep): Promise<void> => {
      await options.hooks?.step?.(name);
    };
    this.#lists = new KernelLists(capabilities, this.#readOptions);
    this.#cycle = new Cycle({
      store: options.store,
      quotes: options.quotes,
      lists: this.#lists,
      pcr: this.#imaPcr,
      chunkBounds: options.chunkBounds ?? COLLECTOR_DEFAULTS.chunkBounds,
      readWindowRecords: this.#readOptions.maxBatchRecords ?? COLLECTOR_DEFAULTS.readWindowRecords,
      metrics: this.#metrics,
      now: this.#clock,
      step,
      exportQuoteAttempts: options.exportQuoteAttempts ?? COLLECTOR_DEFAULTS.exportQuoteAttempts,
    });
    this.#removal = new Removal(
      {
        store: options.store,
        capabilities,
        files: options.files,
        busyRetry: options.busyRetry,
        readOptions: this.#readOptions,
        lists: this.#lists,
        cycle: this.#cycle,
        attest: () => this.#attest(),
        stagedQuoteAttempts: options.stagedQuoteAttempts ?? COLLECTOR_DEFAULTS.stagedQuoteAttempts,
        stagedQuoteDelayMs: options.stagedQuoteDelayMs ?? COLLECTOR_DEFAULTS.stagedQuoteDelayMs,
        metrics: this.#metrics,
        now: this.#clock,
        step,
      },
      flavor.flavor,
    );
  }

  /**
   * Probes the kernel, picks the flavour, finds or begins the boot segment, and recovers: a
   * journaled removal without outcome is decided and finished, a staged list left after `A` is
   * taken over. A pending removal that cannot be decided does not stop it: `status().recovery`
   * says why, and each cycle tries again (failing with `COLLECTOR_RECOVERY_FAILED` meanwhile).
   * @example
   * ```ts
   * const collector = await Collector.open({ store, quotes: new TpmQuoter(tpm), securityfsRoot: '/sys/kernel/security' });
   * ```
   * @throws {KERNEL_ENOENT} no IMA directory or list under `securityfsRoot` (other KERNEL_* codes: the kernel refused a read)
   * @throws {STORE_CORRUPT} the store's boot segment does not decode
   * @throws {TPM_TRANSPORT_TIMEOUT} the TPM does not answer (other TPM_* codes: it refused a command)
   */
  static async open(options: CollectorOptions): Promise<Collector> {
    const capabilities = probeSecurityfs({ root: options.securityfsRoot, cmdlinePath: options.cmdlinePath, files: options.files });
    const collector = new Collector(options, capabilities);
    if (options.deviceId !== undefined) await adoptDeviceId(options.store, options.deviceId);
    await collector.#openSegment(collector.#kernelBootId());
    return collector;
  }

  // ---- boot segments and recovery ---------------------------------------------------------------

  #kernelBootId(): string {
    return readKernelBootId(this.#options.bootIdPath);
  }

  /** Continues the store's current boot if it is this kernel's, else begins a new segment. */
  async #openSegment(kernelBootId: string): Promise<void> {
    const options = this.#options;
    const segment = await openBootSegment(
      { store: this.#store, quotes: options.quotes, pcr: this.#imaPcr, banks: options.banks, bankModes: options.bankModes, now: this.#clock },
      kernelBootId,
    );
    await this.#enterSegment(segment);
  }

  async #enterSegment(segment: BootSegment): Promise<void> {
    this.#cycle.enter(segment);
    this.#removal.resume();
    await this.#recover();
  }

  /**
   * Brings the in-memory state to the store's and the kernel's (design.md "The cycle", recovery):
   * settles the journal (recovery.ts, the one resolution every serving path shares), then
   * positions the kernel readers after the stored records. Drops the open chunk: its records are
   * still in the kernel and are read again. An undecided removal leaves the readers unpositioned
   * and sets `#recoveryPause`.
   */
  async #recover(): Promise<void> {
    const { boot, banks } = this.#cycle.segment;
    const store = this.#store;
    const pcr = this.#imaPcr;
    const tpm = { pcr, readPcrs: async () => pcrsByBank(await this.#options.quotes.readPcrs(inBanks(banks, pcr)), pcr) };
    const resolution = await settleJournal(store, boot, recoveryReads(store, boot, this.#capabilities, this.#readOptions, tpm), this.#clock);
    await this.#cycle.resume();
    if (!resolution.settled) {
      this.#recoveryPause = { reason: resolution.reason, message: resolution.message, removed: resolution.removed, at: this.#clock() };
      this.#lists.settle(resolution.removed, null);
      return;
    }
    this.#recoveryPause = null;
    this.#lists.settle(resolution.removed, resolution.stagedCount);
    await this.#cycle.positionReaders();
  }

  // ---- the cycle --------------------------------------------------------------------------------

  /**
   * One cycle: drain, chunk, quote, read what arrived meanwhile, match, checkpoint, remove. Throws
   * what stopped it (the state stays consistent: the next cycle continues), e.g. `QUOTE_MISMATCH`
   * (nothing removed), `STORE_WRITE_FAILED` (removal waits for space), `KERNEL_EBUSY`.
   * @example
   * ```ts
   * const report = await collector.runOnce();   // report.stored, report.checkpoint, report.removed
   * ```
   * @throws {QUOTE_MISMATCH} no replay of the stored records reaches the quoted PCRs: nothing is removed
   * @throws {STORE_WRITE_FAILED} a synced write failed (disk full): removal waits for space
   * @throws {KERNEL_EBUSY} another writer holds the list's lock past the retries
   * @throws {COLLECTOR_KERNEL_DIVERGED} the kernel's first record is not the stored one the removal expects: nothing removed
   * @throws {COLLECTOR_RECOVERY_FAILED} a journaled removal is still undecided
   * @throws {COLLECTOR_STOPPED} the collector was closed
   */
  async runOnce(): Promise<CycleReport> {
    if (this.#closed) throw new CollectorError('COLLECTOR_STOPPED', 'the collector is closed');
    return this.#serial.run(() => this.#runCycle());
  }

  async #runCycle(): Promise<CycleReport> {
    const t0 = performance.now();
    const removedBefore = this.#lists.removed;
    try {
      const bootId = this.#kernelBootId();
      if (bootId !== this.#cycle.segment.record.kernelBootId) await this.#openSegment(bootId);
      else if (this.#recoveryPause !== null || ((await this.#store.journal(this.#cycle.boot)).pending !== null && this.#lists.stagedCount === null)) await this.#recover();
      if (this.#recoveryPause !== null) throw recoveryPending(this.#cycle.boot, this.#recoveryPause);
      await this.#cycle.drain();
      if (!(await this.#attest())) return this.#report(t0, removedBefore);
      await this.#removal.remove();
      if (!(await this.#afterTpmReset(await this.#cycle.attestStored()))) return this.#report(t0, removedBefore);
      this.#condition = null;
      return this.#report(t0, removedBefore);
    } catch (e) {
      const code = errorCode(e);
      this.#metrics.error(code);
      this.#condition = { code, message: e instanceof Error ? e.message : String(e), at: this.#clock() };
      throw e;
    } finally {
      this.#metrics.cycles++;
      this.#metrics.cycle.add(performance.now() - t0);
    }
  }

  /** Quotes and matches (cycle.ts). False when the TPM was reset: a new boot segment began instead. */
  async #attest(): Promise<boolean> {
    return this.#afterTpmReset(await this.#cycle.attest());
  }

  /** True if `attestation` found the segment's TPM; else begins the segment after the reset, false. */
  async #afterTpmReset(attestation: Attestation): Promise<boolean> {
    if (!attestation.tpmReset) return true;
    await this.#enterSegment(await beginAfterTpmReset(this.#store, this.#cycle.segment, attestation.resetCount, this.#clock()));
    return false;
  }

  #report(t0: number, removedBefore: number): CycleReport {
    return {
      boot: this.#cycle.boot,
      drained: this.#cycle.drained,
      stored: this.#cycle.stored,
      checkpoint: this.#cycle.lastCheckpoint?.count ?? null,
      removed: this.#lists.removed - removedBefore,
      durationMs: performance.now() - t0,
    };
  }

  // ---- scheduling -------------------------------------------------------------------------------

  /**
   * Runs cycles until `signal` aborts: every `intervalMs`, earlier when the kernel's list passes
   * `cycleAtRecords` records or `cycleAtKmemBytes` modeled bytes. A failed cycle is reported in
   * `status()` and retried at the next one (an undecided pending removal included), except store
   * corruption, which ends the loop. An abort lets the current cycle finish its step.
   */
  async run(signal: AbortSignal, onCycle?: (report: CycleReport | undefined, error: unknown) => void): Promise<void> {
    const readings = {
      kernelRecords: () => readCounter(this.#capabilities.countPath, this.#options.files) + (this.#lists.stagedCount ?? 0),
      bytesPerRecord: () => this.#cycle.kernelBytesPerRecord,
    };
    while (!signal.aborted && !this.#closed) {
      try {
        onCycle?.(await this.runOnce(), undefined);
      } catch (e) {
        onCycle?.(undefined, e);
        if (endsRun(e)) throw e;
      }
      await waitForCycle(signal, this.#schedule, readings);
    }
  }

  // ---- what serve and the CLI read ---------------------------------------------------------------

  /** A snapshot of the state and metrics. */
  status(): CollectorStatus {
    const { boot, record } = this.#cycle.segment;
    const kernelRecords = this.#cycle.drained - this.#lists.removed;
    const lastCheckpoint = this.#cycle.lastCheckpoint;
    return {
      boot,
      kernelBootId: record.kernelBootId,
      resetCount: record.resetCount,
      flavor: this.#removal.flavor,
      flavorReason: this.#flavorReason,
      removed: this.#lists.removed,
      stored: this.#cycle.stored,
      drained: this.#cycle.drained,
      staged: this.#lists.stagedCount,
      kernelRecords,
      kernelBytesModel: Math.round(kernelRecords * this.#cycle.kernelBytesPerRecord),
      lastCheckpoint: lastCheckpoint === undefined ? null : { count: lastCheckpoint.count },
      removalHalted: this.#removal.haltedBy,
      recovery: this.#recoveryPause,
      condition: this.#condition,
      metrics: this.#metrics.snapshot(),
      updatedAt: this.#clock(),
    };
  }

  /** The store the collector writes (the caller's). */
  get store(): ImaStore {
    return this.#store;
  }

  /** The current boot segment's number in the store. */
  get boot(): number {
    return this.#cycle.boot;
  }

  /** Records of the current boot removed from the kernel so far (design.md's T). */
  get removed(): number {
    return this.#lists.removed;
  }

  /**
   * Global index one past the kernel's last record now: removed + staged +
   * `runtime_measurements_count` (the counter file takes no lock, docs/kernel.md#counters); the
   * drained count if the counter cannot be read.
   */
  kernelEnd(): number {
    if (this.#recoveryPause !== null) throw recoveryPending(this.#cycle.boot, this.#recoveryPause);
    try {
      return this.#lists.removed + (this.#lists.stagedCount ?? 0) + readCounter(this.#capabilities.countPath, this.#options.files);
    } catch {
      return this.#cycle.drained;
    }
  }

  /**
   * Records only the kernel holds, from global index `from` on, in batches (`src/serve`'s
   * KernelTail). Each batch is read with the cycle held off, so the removed count cannot move
   * under it; between batches nothing is held (a slow reader never delays a removal, Invariant 5).
   * A batch starts past `from` when those records are in the store by then: read them there. When
   * the kernel no longer holds anything from `from` on (removal passed it), an empty batch at the
   * removed count ends the iteration.
   */
  async *tailBatches(from: number): AsyncGenerator<{ readonly firstIndex: number; readonly records: readonly ImaRecord[] }> {
    const boot = this.#cycle.boot;
    let next = from;
    for (;;) {
      const read = await this.#serial.run(async () => {
        if (this.#cycle.boot !== boot) return undefined;
        if (this.#recoveryPause !== null) throw recoveryPending(boot, this.#recoveryPause);
        const removed = this.#lists.removed;
        // The drain position less the open chunk is where the first unsealed record starts.
        const drainedAt = this.#lists.currentList.position;
        const open = this.#cycle.openChunk;
        const storedAt = { index: drainedAt.index - open.count, offset: drainedAt.offset - open.byteLength };
        for await (const batch of kernelTail(this.#store, boot, this.#lists.layout(), this.#cycle.stored, next, this.#readOptions, storedAt)) return { removed, batch };
        return { removed, batch: [] as StoredRecord[] };
      });
      if (read === undefined) return;
      const { removed, batch } = read;
      const last = batch.at(-1);
      if (last === undefined) {
        // Everything from `next` was removed meanwhile: say where the kernel's part begins now
        // (KernelTail's contract), so the log stream takes the removed records from the store.
        if (next < removed) yield { firstIndex: removed, records: [] };
        return;
      }
      yield { firstIndex: last.index - batch.length + 1, records: batch.map((r) => r.record) };
      next = last.index + 1;
    }
  }

  /** Writes `status()` to `path` for `imakeep status` while the daemon holds the store (status.ts). */
  writeStatusFile(path: string): void {
    writeStatusFile(path, this.status());
  }

  /** Stops: waits for the running cycle, then refuses new ones. Writes nothing (open-chunk records stay in the kernel). */
  async close(): Promise<void> {
    await this.#serial.run(async () => {
      this.#closed = true;
    });
  }
}
