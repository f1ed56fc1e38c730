/**
 * The collector: the cycle of design.md (drain, chunk, quote, match, remove), recovery at start,
 * boot segments, scheduling and metrics.
 *
 * Order is what makes it safe. A record leaves the kernel only after the chunk holding it was
 * committed with a synced write and a stored checkpoint covers it (Invariant 1; the store checks
 * both again before it journals an intent). Every kernel write sits between a synced journal
 * intent and a synced outcome (Invariant 3). In-memory state changes only after the write it
 * mirrors reached disk, so a failed write (ENOSPC) leaves the collector where it was.
 */
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { BANKS, PcrReplay, bytesEqual, fitsNow, replayUntilFits, toHex, type BankMode, type BankName, type ImaRecord } from '../ima/index.js';
import { encodePcrBlob, quoteTarget, verifySignedQuote, type PcrRef, type PcrValue, type SignedQuote } from '../tpm/index.js';
import {
  KernelError,
  deleteStaged,
  probeSecurityfs,
  readCounter,
  recordKmem,
  removeFirstRecords,
  stageAll,
  type KernelCapabilities,
  type MeasurementListReader,
  type RemovalResult,
  type SecurityfsFiles,
} from '../kernel/index.js';
import { adoptDeviceId, ChunkBuilder, chainedNonceV1, nextCheckpointNonce, replayAt, type BootRecord, type Checkpoint, type ImaStore, type KernelHeadFacts, type StoredRecord } from '../store/index.js';
import { isImakeepError } from '../errors.js';
import {
  COLLECTOR_DEFAULTS,
  chooseFlavor,
  type CollectorOptions,
  type CollectorStep,
  type Flavor,
} from './config.js';
import { CollectorError } from './errors.js';
import { kernelTail, listReader, recoveryPending, recoveryReads, type KernelLayout, type KernelReadOptions } from './kernel-log.js';
import { CollectorMetrics, type MetricsSnapshot } from './metrics.js';
import { pcrsByBank, recordIdentity, resolveJournal, sameRecord, type RecoveryPauseReason } from './recovery.js';
import { storedBytes, storedRange } from './stored.js';

/** Default path of the kernel's boot id. */
export const DEFAULT_BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';

/** PCR `pcr` of each of `banks`: what the collector quotes and reads. */
const inBanks = (banks: readonly BankName[], pcr: number): PcrRef[] => banks.map((bank) => ({ bank, pcr }));

/** A condition that stops removal until it clears (reported in status). */
export interface CollectorCondition {
  readonly code: string;
  readonly message: string;
  /** When it was last seen (ms since the epoch). */
  readonly at: number;
}

/** A pending removal left undecided: removal and the kernel's part of the log wait (recovery.ts). */
export interface RecoveryPause {
  readonly reason: RecoveryPauseReason;
  readonly message: string;
  /** T as journaled (records before it are removed for certain). */
  readonly removed: number;
  /** When it was last tried (ms since the epoch). */
  readonly at: number;
}

/** What `status()` reports. */
export type CollectorStatus = {
  readonly boot: number;
  readonly kernelBootId: string;
  readonly resetCount: number | null;
  readonly flavor: Flavor;
  readonly flavorReason: string;
  /** T: records removed from the kernel so far in this boot. */
  readonly removed: number;
  /** Records 0..stored-1 are in committed chunks. */
  readonly stored: number;
  /** Records read from the kernel (stored or in the open chunk). */
  readonly drained: number;
  /** Records in the staged list, or null. */
  readonly staged: number | null;
  /** Records the kernel holds as of the last drain (drained − T). */
  readonly kernelRecords: number;
  /** Modeled kernel memory of those records (docs/kernel.md#kernel-memory-per-record), bytes. */
  readonly kernelBytesModel: number;
  readonly lastCheckpoint: { readonly count: number } | null;
  /** Why removal is stopped for this boot (ESTALE: kexec/reboot under way), or null. */
  readonly removalHalted: string | null;
  /** A pending removal that could not be decided (retried every cycle), or null. */
  readonly recovery: RecoveryPause | null;
  /** The last failure, cleared by the next clean cycle. */
  readonly condition: CollectorCondition | null;
  readonly metrics: MetricsSnapshot;
  readonly updatedAt: number;
};

/** What one cycle did. */
export interface CycleReport {
  readonly boot: number;
  readonly drained: number;
  readonly stored: number;
  readonly checkpoint: number | null;
  readonly removed: number;
  readonly durationMs: number;
}

/** A FIFO mutex: the cycle and kernel-tail readers exclude each other (T must not move under a reader). */
class Mutex {
  #tail: Promise<void> = Promise.resolve();

  async lock(): Promise<() => void> {
    let release: () => void = () => undefined;
    const next = new Promise<void>((resolve) => {
      release = resolve;
    });
    const previous = this.#tail;
    this.#tail = previous.then(() => next);
    await previous;
    return release;
  }
}

function codeOf(e: unknown): string {
  return isImakeepError(e) ? e.code : e instanceof Error ? e.name : 'UNKNOWN';
}

function kernelCode(e: unknown): string | undefined {
  return e instanceof KernelError ? e.code : undefined;
}

/** Boot-scoped state, rebuilt whenever a boot segment begins or recovery moved T. */
interface BootState {
  readonly boot: number;
  readonly record: BootRecord;
  readonly banks: readonly BankName[];
  readonly modes: Readonly<Partial<Record<BankName, BankMode>>>;
}

/** The collector of one device. Open with {@link Collector.open}. */
export class Collector {
  readonly #options: CollectorOptions;
  readonly #store: ImaStore;
  readonly #capabilities: KernelCapabilities;
  readonly #securityfsFiles: SecurityfsFiles | undefined;
  readonly #readOptions: KernelReadOptions;
  readonly #flavorReason: string;
  readonly #metrics = new CollectorMetrics();
  readonly #mutex = new Mutex();
  readonly #clock: () => number;
  readonly #imaPcr: number;
  #flavor: Flavor;
  #segmentState: BootState | undefined;
  /** T. */
  #removedRecords = 0;
  #stagedCount: number | null = null;
  #storedRecords = 0;
  #lastCheckpoint: Checkpoint | undefined;
  /** Replay at the last checkpoint's count, if computed. */
  #replayAtCheckpoint: PcrReplay | undefined;
  /** Replay at the open chunk's end (every drained record). */
  #replayAtDrain: PcrReplay;
  /** PCR of the last record drained (the one #replayAtDrain extended last); -1 before any. */
  #lastDrainedPcr = -1;
  #openChunk: ChunkBuilder;
  #currentListReader: MeasurementListReader;
  #stagedListReader: MeasurementListReader | null = null;
  #removalHalted: string | null = null;
  #recoveryPause: RecoveryPause | null = null;
  #condition: CollectorCondition | null = null;
  #kmemPerRecordMean = 0;
  #kmemSamples = 0;
  #closed = false;

  private constructor(o: CollectorOptions, caps: KernelCapabilities, flavor: { flavor: Flavor; reason: string }) {
    this.#options = o;
    this.#store = o.store;
    this.#capabilities = caps;
    this.#securityfsFiles = o.files;
    this.#flavor = flavor.flavor;
    this.#flavorReason = flavor.reason;
    this.#clock = o.now ?? Date.now;
    this.#imaPcr = o.pcr ?? COLLECTOR_DEFAULTS.pcr;
    this.#readOptions = {
      files: o.files,
      readSize: o.readSize ?? COLLECTOR_DEFAULTS.readSize,
      retry: o.busyRetry,
      maxBatchRecords: o.readWindowRecords ?? COLLECTOR_DEFAULTS.readWindowRecords,
    };
    // Placeholders until #openBoot positions them at the boot's stored count.
    this.#replayAtDrain = new PcrReplay({ banks: { sha256: 'native' } });
    this.#openChunk = new ChunkBuilder(0);
    this.#currentListReader = listReader(caps.binaryListPath, { index: 0, offset: 0 }, this.#readOptions);
  }

  /** The open boot segment (set by #openBoot before any other use). */
  get #segment(): BootState {
    if (this.#segmentState === undefined) throw new CollectorError('COLLECTOR_STOPPED', 'no boot segment is open');
    return this.#segmentState;
  }

  /**
   * Probes the kernel, picks the flavour, finds or begins the boot segment, and recovers: a
   * journaled removal without outcome is decided and finished, a staged list left after `A` is
   * taken over. A pending removal that cannot be decided does not stop it: `status().recovery`
   * says why, and each cycle tries again (failing with `COLLECTOR_RECOVERY_FAILED` meanwhile).
   */
  static async open(options: CollectorOptions): Promise<Collector> {
    const caps = probeSecurityfs({ root: options.securityfsRoot, cmdlinePath: options.cmdlinePath, files: options.files });
    const collector = new Collector(options, caps, chooseFlavor(options.flavor ?? 'auto', caps));
    if (options.deviceId !== undefined) await adoptDeviceId(options.store, options.deviceId);
    await collector.#openBoot(collector.#readBootId());
    return collector;
  }

  // ---- boot segments and recovery ---------------------------------------------------------------

  #readBootId(): string {
    return readFileSync(this.#options.bootIdPath ?? DEFAULT_BOOT_ID_PATH, 'latin1').trim();
  }

  /** Continues the store's current boot if it is this kernel's, else begins a new segment. */
  async #openBoot(kernelBootId: string): Promise<void> {
    const store = this.#store;
    const current = store.currentBoot;
    let boot: number;
    let record: BootRecord;
    if (current !== undefined && (await store.bootRecord(current)).kernelBootId === kernelBootId) {
      boot = current;
      record = await store.bootRecord(current);
    } else {
      const banks = await this.#configuredBanks();
      const modes: Partial<Record<BankName, BankMode>> = {};
      for (const bank of banks) modes[bank] = this.#options.bankModes?.[bank] ?? 'native';
      // The boot's first quote only learns resetCount (a TPM reset is a reboot); it is not stored.
      const probe = await this.#options.quotes.quote(chainedNonceV1(undefined, kernelBootId), inBanks(banks, this.#imaPcr));
      const info = {
        kernelBootId,
        firstSeen: this.#clock(),
        resetCount: probe.parsed.clockInfo.resetCount,
        bankModes: modes,
        endianness: 'le' as const,
        template: 'ima-ng',
        templateHash: 'sha256',
      };
      boot = await store.beginBoot(info);
      record = { ...info, exported: null };
    }
    const modes = record.bankModes;
    this.#segmentState = { boot, record, banks: BANKS.filter((b) => modes[b] !== undefined), modes };
    this.#removalHalted = null;
    await this.#recover();
  }

  async #configuredBanks(): Promise<readonly BankName[]> {
    const active = await this.#options.quotes.activeBanks();
    const wanted = this.#options.banks ?? active;
    const banks = BANKS.filter((b) => wanted.includes(b) && active.includes(b));
    if (banks.length === 0) throw new RangeError(`none of the banks [${wanted.join(', ')}] is active in the TPM [${active.join(', ')}]`);
    return banks;
  }

  /**
   * Brings the in-memory state to the store's and the kernel's (design.md "Recovery"): resolves
   * the journal (recovery.ts, the one resolution every serving path shares) and journals the
   * decision, then positions the kernel readers after the stored records. Drops the open chunk:
   * its records are still in the kernel and are read again. An undecided removal leaves the
   * readers unpositioned and sets `#recoveryPause`.
   */
  async #recover(): Promise<void> {
    const { boot, banks } = this.#segment;
    const store = this.#store;
    const journal = await store.journal(boot);
    const tpm = { pcr: this.#imaPcr, readPcrs: async () => pcrsByBank(await this.#options.quotes.readPcrs(inBanks(banks, this.#imaPcr)), this.#imaPcr) };
    const resolution = await resolveJournal(journal, recoveryReads(store, boot, this.#capabilities, this.#readOptions, tpm));
    this.#removedRecords = resolution.removed;
    this.#storedRecords = await store.storedCount(boot);
    this.#lastCheckpoint = await store.lastCheckpoint(boot);
    this.#replayAtCheckpoint = undefined;
    if (!resolution.settled) {
      this.#recoveryPause = { reason: resolution.reason, message: resolution.message, removed: resolution.removed, at: this.#clock() };
      this.#stagedCount = null;
      this.#openChunk = new ChunkBuilder(this.#storedRecords);
      return;
    }
    const action = resolution.action;
    if (action.kind === 'outcome') await store.journalOutcome(boot, { done: action.done });
    if (action.kind === 'adopt-staged') {
      if (action.journalIntent) await store.journalIntent(boot, { flavor: 'staged', removed: journal.removed, n: 0, at: this.#clock() });
      await store.journalStaged(boot, { step: 'staged', count: action.count });
    }
    this.#recoveryPause = null;
    this.#stagedCount = resolution.stagedCount;
    await this.#positionReaders();
  }

  /** Readers, open chunk and chunk replay at the stored count. */
  async #positionReaders(): Promise<void> {
    const { boot } = this.#segment;
    const removed = this.#removedRecords;
    const stagedCount = this.#stagedCount;
    const stored = this.#storedRecords;
    const at = async (first: number) => ({ index: stored - first, offset: await storedBytes(this.#store, boot, first, stored) });
    const stagedPath = this.#capabilities.stagedBinaryListPath;
    if (stagedCount !== null && stagedPath !== undefined) {
      const inStaged = stored < removed + stagedCount;
      this.#stagedListReader = listReader(stagedPath, inStaged ? await at(removed) : { index: stagedCount, offset: await storedBytes(this.#store, boot, removed, removed + stagedCount) }, this.#readOptions);
      this.#currentListReader = listReader(this.#capabilities.binaryListPath, inStaged ? { index: 0, offset: 0 } : await at(removed + stagedCount), this.#readOptions);
    } else {
      this.#stagedListReader = null;
      this.#currentListReader = listReader(this.#capabilities.binaryListPath, await at(removed), this.#readOptions);
    }
    this.#openChunk = new ChunkBuilder(stored, this.#options.chunkBounds ?? COLLECTOR_DEFAULTS.chunkBounds);
    const replay = await replayAt(this.#store, boot, stored, this.#segment.modes);
    this.#replayAtDrain = PcrReplay.fromState(replay.toState(), { verifyDigests: false });
    this.#lastDrainedPcr = -1;
  }

  // ---- the cycle --------------------------------------------------------------------------------

  async #step(step: CollectorStep): Promise<void> {
    await this.#options.hooks?.step?.(step);
  }

  /**
   * One cycle: drain, chunk, quote, read what arrived meanwhile, match, checkpoint, remove. Throws
   * what stopped it (the state stays consistent: the next cycle continues), e.g. `QUOTE_MISMATCH`
   * (nothing removed), `STORE_WRITE_FAILED` (removal waits for space), `KERNEL_EBUSY`.
   */
  async runOnce(): Promise<CycleReport> {
    if (this.#closed) throw new CollectorError('COLLECTOR_STOPPED', 'the collector is closed');
    const release = await this.#mutex.lock();
    const t0 = performance.now();
    const removedBefore = this.#removedRecords;
    try {
      const bootId = this.#readBootId();
      if (bootId !== this.#segment.record.kernelBootId) await this.#openBoot(bootId);
      else if (this.#recoveryPause !== null || ((await this.#store.journal(this.#segment.boot)).pending !== null && this.#stagedCount === null)) await this.#recover();
      if (this.#recoveryPause !== null) throw recoveryPending(this.#segment.boot, this.#recoveryPause);
      await this.#drain();
      if (!(await this.#attest())) return this.#report(t0, removedBefore);
      await this.#remove();
      this.#condition = null;
      return this.#report(t0, removedBefore);
    } catch (e) {
      this.#metrics.error(codeOf(e));
      this.#condition = { code: codeOf(e), message: e instanceof Error ? e.message : String(e), at: this.#clock() };
      throw e;
    } finally {
      this.#metrics.cycles++;
      this.#metrics.cycle.add(performance.now() - t0);
      release();
    }
  }

  #report(t0: number, removedBefore: number): CycleReport {
    return {
      boot: this.#segment.boot,
      drained: this.#openChunk.nextIndex,
      stored: this.#storedRecords,
      checkpoint: this.#lastCheckpoint?.count ?? null,
      removed: this.#removedRecords - removedBefore,
      durationMs: performance.now() - t0,
    };
  }

  /** Reads the kernel from the drain position to the end: the staged list first, if any. */
  async #drain(): Promise<void> {
    const stagedCount = this.#stagedCount;
    if (this.#stagedListReader !== null && stagedCount !== null && this.#openChunk.nextIndex < this.#removedRecords + stagedCount) await this.#drainFrom(this.#stagedListReader);
    await this.#drainFrom(this.#currentListReader);
  }

  async #drainFrom(reader: MeasurementListReader): Promise<void> {
    const bounds = this.#openChunk;
    // An earlier seal failed (ENOSPC): commit first, read more only then, so that the open chunk
    // holds at most one bound plus one read window however long the store stays full (Invariant 4).
    if (bounds.shouldSeal(this.#clock())) await this.#seal();
    for await (const batch of reader.drain({ maxBatchRecords: this.#readOptions.maxBatchRecords })) {
      const now = this.#clock();
      // The reader's position is already past the whole batch: every record of it must reach the
      // open chunk even when a seal fails half-way (ENOSPC), or the next drain would skip the
      // rest (a gap that only QUOTE_MISMATCH would catch). So a failed seal is rethrown after it.
      let sealFailure: { readonly error: unknown } | undefined;
      for (const rec of batch.records) {
        this.#replayAtDrain.extend(rec);
        this.#lastDrainedPcr = rec.pcr;
        bounds.add(rec, now);
        this.#sampleKmem(rec);
        // Seal at the record that reaches the bound, not at the end of the read batch: a batch of
        // 4096 records is ~1 MB, and chunks that large made LevelDB's mmapped tables (RssFile)
        // grow past the configured bound (bench/ingest.ts, 1M records: 1-1.3 MB chunks).
        if (sealFailure === undefined && bounds.shouldSeal(now)) {
          try {
            await this.#seal();
          } catch (error) {
            sealFailure = { error };
          }
        }
      }
      if (sealFailure !== undefined) throw sealFailure.error;
    }
  }

  #sampleKmem(rec: ImaRecord): void {
    // A running mean over the first records is enough for a threshold (docs/kernel.md#kernel-memory-per-record).
    if (this.#kmemSamples >= 4096) return;
    const k = recordKmem(rec, Math.max(1, this.#segment.banks.length));
    this.#kmemPerRecordMean += (k.data + k.entry - this.#kmemPerRecordMean) / ++this.#kmemSamples;
  }

  /** Commits the open chunk (one synced put). */
  async #seal(): Promise<void> {
    const builder = this.#openChunk;
    if (builder.count === 0) return;
    const draft = builder.draft(this.#replayAtDrain.toState());
    await this.#store.appendChunk(this.#segment.boot, draft);
    builder.committed(draft);
    this.#storedRecords = draft.firstIndex + draft.count;
    this.#metrics.chunksCommitted++;
    this.#metrics.recordsStored += draft.count;
    this.#metrics.bytesStored += draft.records.length;
    await this.#step('chunk-committed');
  }

  /**
   * Quote, then read what arrived meanwhile and commit it, then match and store the checkpoint.
   * False when the TPM was reset (a new boot segment began instead).
   */
  async #attest(): Promise<boolean> {
    const { banks, record } = this.#segment;
    await this.#seal(); // the nonce binds the chunk chain: what was read goes into it first
    const { nonce, anchor } = await nextCheckpointNonce(this.#store, this.#segment.boot, this.#lastCheckpoint);
    const quote = await this.#options.quotes.quote(nonce, inBanks(banks, this.#imaPcr));
    this.#metrics.quotes++;
    const resetCount = quote.parsed.clockInfo.resetCount;
    if (record.resetCount !== null && resetCount !== record.resetCount) {
      // resetCount moved: the TPM was reset, so its PCRs started over; this is another boot.
      await this.#store.beginBoot({ ...record, firstSeen: this.#clock(), resetCount });
      await this.#openBoot(record.kernelBootId);
      return false;
    }
    await this.#drain();
    await this.#seal();
    const { count: k, replay, pcrs } = await this.#match(quote);
    if (k > (this.#lastCheckpoint?.count ?? 0)) {
      verifySignedQuote(quote, nonce, pcrs);
      const checkpoint: Checkpoint = { count: k, pcrs, attest: quote.attest, signature: quote.signature, akName: quote.akName, nonce, pcrBlob: encodePcrBlob(pcrs), anchor };
      await this.#store.storeCheckpoint(this.#segment.boot, checkpoint);
      if (this.#store.meta.akPublic === null) await this.#store.updateMeta({ akPublic: quote.akPublic });
      this.#lastCheckpoint = checkpoint;
      this.#replayAtCheckpoint = replay;
      this.#metrics.checkpoints++;
      await this.#step('checkpoint-stored');
    }
    return true;
  }

  /**
   * The smallest record count from the last checkpoint on whose replay gives the PCR values the
   * quote attests (docs/ima-formats.md#imaPcr-replay: replay until the quote matches; extra records are normal).
   * Every record logged before the quote is stored by now, so no match is `QUOTE_MISMATCH`.
   */
  async #match(quote: SignedQuote): Promise<{ count: number; replay: PcrReplay; pcrs: PcrValue[] }> {
    const { boot, modes, banks } = this.#segment;
    const pcr = this.#imaPcr;
    const from = this.#lastCheckpoint?.count ?? 0;
    const target = quoteTarget(quote);
    // Fast path: every drained record is stored (drain and seal came first) and already replayed,
    // record by record as it was read (#replayAtDrain). On a kernel that logged nothing between the
    // quote and the drain, the quote fits that state, and no stored record is read back and hashed
    // again (bench/results/lean.md). It is the shortest fitting prefix only if the last record
    // extended the quoted PCR; otherwise the search below finds the shortest.
    const drained = this.#replayAtDrain;
    if (drained.recordCount > from && this.#lastDrainedPcr === pcr) {
      const values = fitsNow(target, drained);
      if (values !== undefined) return { count: drained.recordCount, replay: PcrReplay.fromState(drained.toState(), { verifyDigests: false }), pcrs: values };
    }
    const base = this.#replayAtCheckpoint ?? (await replayAt(this.#store, boot, from, modes));
    this.#replayAtCheckpoint = base;
    const replay = PcrReplay.fromState(base.toState(), { verifyDigests: false });
    const records = async function* (store: ImaStore): AsyncGenerator<ImaRecord> {
      for await (const { record } of store.records(boot, from)) yield record;
    };
    const pcrs = await replayUntilFits(target, replay, records(this.#store));
    if (pcrs !== undefined) return { count: replay.recordCount, replay, pcrs };
    // Name a bank whose TPM value differs from the replay of everything stored (informational).
    const tpm = await this.#options.quotes.readPcrs(inBanks(banks, pcr));
    const differs = tpm.find((v) => !bytesEqual(v.value, replay.value(v.bank, pcr))) ?? tpm[0];
    const bank = differs?.bank ?? banks[0] ?? 'sha256';
    throw new CollectorError(
      'QUOTE_MISMATCH',
      `boot ${boot}: the quote of PCR ${pcr} fits no replay of records ${from}..${replay.recordCount} (${bank}: TPM ${toHex(differs?.value ?? new Uint8Array(0))}, replay ${toHex(replay.value(bank, pcr))}); nothing is removed`,
      { boot, bank, pcr, quoted: toHex(differs?.value ?? new Uint8Array(0)), replayed: toHex(replay.value(bank, pcr)), from, to: replay.recordCount },
    );
  }

  /** Removes what is stored and covered (Invariant 1), by the flavour in use. */
  async #remove(): Promise<void> {
    if (this.#flavor === 'none' || this.#removalHalted !== null) return;
    try {
      if (this.#stagedCount !== null) await this.#finishStaged();
      else if (this.#flavor === 'n') await this.#removeN();
      else await this.#removeStaged();
    } catch (e) {
      const code = kernelCode(e);
      if (code === 'KERNEL_ESTALE' || code === 'KERNEL_EACCES') {
        // Measurement is suspended: kexec/reboot under way. The records travel to the next kernel,
        // whose boot is a new segment: remove nothing more here (docs/kernel.md#reboot-and-kexec).
        this.#removalHalted = code;
        return;
      }
      if (code === 'KERNEL_EPERM') {
        this.#flavor = 'none';
        this.#removalHalted = code;
        return;
      }
      throw e;
    }
  }

  #kernelWritten(result: { readonly holdMs: number; readonly attempts: number }): void {
    this.#metrics.writerLockHold.add(result.holdMs);
    this.#metrics.busyRetries += result.attempts - 1;
  }

  /** Flavour `n`: one writer window that checks the head and writes "n\n" (docs/kernel.md#staging-requests). */
  async #removeN(): Promise<void> {
    const { boot } = this.#segment;
    const removed = this.#removedRecords;
    const target = Math.min(this.#storedRecords, this.#lastCheckpoint?.count ?? 0);
    const n = target - removed;
    if (n <= 0) return;
    // Everything the lock window needs is read before it: the window is open, read one record, write.
    const bytes = await storedBytes(this.#store, boot, removed, target);
    const [head] = await storedRange(this.#store, boot, removed, 1);
    if (head === undefined) throw new RangeError(`record ${removed} is not stored`);
    const kernelHead = await this.#kernelHeadFacts(head, n, bytes);
    await this.#store.journalIntent(boot, { flavor: 'n', removed, n, at: this.#clock(), kernelHead });
    await this.#step('intent-journaled');
    let result: RemovalResult;
    try {
      result = await removeFirstRecords({
        path: this.#capabilities.binaryListPath,
        files: this.#securityfsFiles,
        retry: this.#options.busyRetry,
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
      await this.#store.journalOutcome(boot, { done: false });
      // retryOnBusy wraps what `decide` threw as KERNEL_IO; the divergence is the news.
      throw e instanceof KernelError && e.cause instanceof CollectorError ? e.cause : e;
    }
    this.#kernelWritten(result);
    await this.#step('kernel-written');
    await this.#store.journalOutcome(boot, { done: true });
    this.#removedRecords = removed + n;
    this.#currentListReader.rebase({ records: n, bytes });
    this.#metrics.recordsRemoved += n;
    this.#metrics.removals++;
    await this.#step('outcome-journaled');
  }

  /**
   * What recovery needs to decide this removal from one read of the head (store `KernelHeadFacts`):
   * the counter, record T, and the record at kernel position n (read at the removed records' byte
   * end, known from the store). Read before the intent, outside the writer window: records only
   * append meanwhile, so they still hold at the write (the window checks the head again).
   */
  async #kernelHeadFacts(first: ImaRecord, n: number, bytes: number): Promise<KernelHeadFacts> {
    const listed = readCounter(this.#capabilities.countPath, this.#securityfsFiles);
    // One record is wanted: a small read (the reader reads on for a larger record).
    const reader = listReader(this.#capabilities.binaryListPath, { index: n, offset: bytes }, { ...this.#readOptions, readSize: 4096 });
    let next: ImaRecord | undefined;
    for await (const batch of reader.drain({ maxBatchRecords: 1 })) {
      next = batch.records[0];
      break;
    }
    return { listed, first: recordIdentity(first), next: next === undefined ? null : recordIdentity(next) };
  }

  /** Flavour `staged`, first half: `A`, then read and store the staged list. */
  async #removeStaged(): Promise<void> {
    const stagedPath = this.#capabilities.stagedBinaryListPath;
    const { boot } = this.#segment;
    if (stagedPath === undefined || this.#openChunk.nextIndex <= this.#removedRecords) return; // nothing read: nothing to stage
    const removed = this.#removedRecords;
    await this.#store.journalIntent(boot, { flavor: 'staged', removed, n: 0, at: this.#clock() });
    await this.#step('intent-journaled');
    try {
      const result = await stageAll(stagedPath, { files: this.#securityfsFiles, retry: this.#options.busyRetry });
      this.#kernelWritten(result);
    } catch (e) {
      await this.#store.journalOutcome(boot, { done: false });
      if (kernelCode(e) === 'KERNEL_ENOENT') return; // the current list was empty
      throw e;
    }
    await this.#step('kernel-written');
    // The current list became the staged list: continue reading it there; the new current list is empty.
    this.#stagedListReader = listReader(stagedPath, this.#currentListReader.position, this.#readOptions);
    this.#currentListReader = listReader(this.#capabilities.binaryListPath, { index: 0, offset: 0 }, this.#readOptions);
    await this.#drainFrom(this.#stagedListReader);
    const stagedCount = this.#stagedListReader.position.index;
    await this.#store.journalStaged(boot, { step: 'staged', count: stagedCount });
    this.#stagedCount = stagedCount;
    await this.#step('staged-journaled');
    await this.#finishStaged();
  }

  /**
   * Flavour `staged`, second half: commit the staged records, quote until a checkpoint covers
   * them all (the kernel logs before it extends: a quote may lag the list), journal, `D`.
   */
  async #finishStaged(): Promise<void> {
    const stagedPath = this.#capabilities.stagedBinaryListPath;
    const stagedCount = this.#stagedCount;
    if (stagedPath === undefined || stagedCount === null) return;
    const { boot } = this.#segment;
    const end = this.#removedRecords + stagedCount;
    if (this.#openChunk.nextIndex < end) await this.#drain();
    await this.#seal();
    const attempts = this.#options.stagedQuoteAttempts ?? COLLECTOR_DEFAULTS.stagedQuoteAttempts;
    for (let attempt = 0; (this.#lastCheckpoint?.count ?? 0) < end && attempt < attempts; attempt++) {
      await delay(this.#options.stagedQuoteDelayMs ?? COLLECTOR_DEFAULTS.stagedQuoteDelayMs);
      if (!(await this.#attest())) return;
    }
    if ((this.#lastCheckpoint?.count ?? 0) < end) return; // not covered yet: the next cycle continues
    const journal = await this.#store.journal(boot);
    if (journal.staged?.step !== 'stored') await this.#store.journalStaged(boot, { step: 'stored', count: stagedCount });
    await this.#step('staged-covered');
    try {
      const result = await deleteStaged(stagedPath, { files: this.#securityfsFiles, retry: this.#options.busyRetry });
      this.#kernelWritten(result);
    } catch (e) {
      // ENOENT: nothing staged any more (deleted by someone else): the records are gone, and stored.
      if (kernelCode(e) !== 'KERNEL_ENOENT') {
        if (kernelCode(e) === 'KERNEL_ESTALE') await this.#store.journalOutcome(boot, { done: false });
        throw e;
      }
    }
    await this.#step('staged-deleted');
    await this.#store.journalOutcome(boot, { done: true });
    this.#removedRecords = end;
    this.#stagedCount = null;
    this.#stagedListReader = null;
    this.#metrics.recordsRemoved += stagedCount;
    this.#metrics.removals++;
    await this.#step('outcome-journaled');
  }

  // ---- scheduling -------------------------------------------------------------------------------

  /**
   * Runs cycles until `signal` aborts: every `intervalMs`, earlier when the kernel's list passes
   * `cycleAtRecords` records or `cycleAtKmemBytes` modeled bytes. A failed cycle is reported in
   * `status()` and retried at the next one (an undecided pending removal included), except store
   * corruption, which ends the loop. An abort lets the current cycle finish its step.
   */
  async run(signal: AbortSignal, onCycle?: (report: CycleReport | undefined, error: unknown) => void): Promise<void> {
    while (!signal.aborted && !this.#closed) {
      try {
        onCycle?.(await this.runOnce(), undefined);
      } catch (e) {
        onCycle?.(undefined, e);
        const code = codeOf(e);
        if (code === 'STORE_CORRUPT' || code === 'STORE_CHAIN_BROKEN' || code === 'COLLECTOR_STOPPED') throw e;
      }
      await this.#waitForCycle(signal);
    }
  }

  async #waitForCycle(signal: AbortSignal): Promise<void> {
    const interval = this.#options.intervalMs ?? COLLECTOR_DEFAULTS.intervalMs;
    const poll = Math.min(interval, this.#options.pollMs ?? COLLECTOR_DEFAULTS.pollMs);
    const atRecords = this.#options.cycleAtRecords ?? COLLECTOR_DEFAULTS.cycleAtRecords;
    const atBytes = this.#options.cycleAtKmemBytes ?? COLLECTOR_DEFAULTS.cycleAtKmemBytes;
    const due = performance.now() + interval;
    while (!signal.aborted && performance.now() < due) {
      await delay(Math.min(poll, due - performance.now()), undefined, { signal }).catch(() => undefined);
      if (signal.aborted) return;
      let count: number;
      try {
        count = readCounter(this.#capabilities.countPath, this.#securityfsFiles) + (this.#stagedCount ?? 0);
      } catch {
        continue; // the counter is advisory; the timer still runs cycles
      }
      if (count >= atRecords || count * this.#kmemPerRecordMean >= atBytes) return;
    }
  }

  // ---- what serve and the CLI read ---------------------------------------------------------------

  /** A snapshot of the state and metrics. */
  status(): CollectorStatus {
    const kernelRecords = this.#openChunk.nextIndex - this.#removedRecords;
    return {
      boot: this.#segment.boot,
      kernelBootId: this.#segment.record.kernelBootId,
      resetCount: this.#segment.record.resetCount,
      flavor: this.#flavor,
      flavorReason: this.#flavorReason,
      removed: this.#removedRecords,
      stored: this.#storedRecords,
      drained: this.#openChunk.nextIndex,
      staged: this.#stagedCount,
      kernelRecords,
      kernelBytesModel: Math.round(kernelRecords * this.#kmemPerRecordMean),
      lastCheckpoint: this.#lastCheckpoint === undefined ? null : { count: this.#lastCheckpoint.count },
      removalHalted: this.#removalHalted,
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
    return this.#segment.boot;
  }

  /** T: records of the current boot removed from the kernel so far. */
  get removed(): number {
    return this.#removedRecords;
  }

  /**
   * Global index one past the kernel's last record now: T + staged + `runtime_measurements_count`
   * (the counter file takes no lock); the drained count if the counter cannot be read.
   */
  kernelEnd(): number {
    if (this.#recoveryPause !== null) throw recoveryPending(this.#segment.boot, this.#recoveryPause);
    try {
      return this.#removedRecords + (this.#stagedCount ?? 0) + readCounter(this.#capabilities.countPath, this.#securityfsFiles);
    } catch {
      return this.#openChunk.nextIndex;
    }
  }

  /**
   * Records only the kernel holds, from global index `from` on, in batches (`src/serve`'s
   * KernelTail). Each batch is read with the cycle held off, so T cannot move under it; between
   * batches nothing is held (a slow reader never delays a removal, Invariant 5). A batch starts
   * past `from` when those records are in the store by then: read them there. When the kernel no
   * longer holds anything from `from` on (T grew past it), an empty batch at T ends the iteration.
   */
  async *tailBatches(from: number): AsyncGenerator<{ readonly firstIndex: number; readonly records: readonly ImaRecord[] }> {
    const boot = this.#segment.boot;
    let next = from;
    for (;;) {
      const release = await this.#mutex.lock();
      let batch: StoredRecord[] | undefined;
      let removed: number;
      try {
        if (this.#segment.boot !== boot) return;
        if (this.#recoveryPause !== null) throw recoveryPending(boot, this.#recoveryPause);
        removed = this.#removedRecords;
        // The drain position less the open chunk is where the first unsealed record starts.
        const storedAt = { index: this.#currentListReader.position.index - this.#openChunk.count, offset: this.#currentListReader.position.offset - this.#openChunk.byteLength };
        for await (const first of kernelTail(this.#store, boot, this.#layout(), this.#storedRecords, next, this.#readOptions, storedAt)) {
          batch = first;
          break;
        }
      } finally {
        release();
      }
      const last = batch?.at(-1);
      if (batch === undefined || last === undefined) {
        // Everything from `next` was removed meanwhile: say where the kernel's part begins now
        // (KernelTail's contract), so the log stream takes the removed records from the store.
        if (next < removed) yield { firstIndex: removed, records: [] };
        return;
      }
      yield { firstIndex: last.index - batch.length + 1, records: batch.map((r) => r.record) };
      next = last.index + 1;
    }
  }

  #layout(): KernelLayout {
    return { removed: this.#removedRecords, stagedCount: this.#stagedCount, currentPath: this.#capabilities.binaryListPath, stagedPath: this.#capabilities.stagedBinaryListPath };
  }

  /**
   * Writes `status()` as JSON to `path` (write-then-rename: readers never see half a file), for
   * `imakeep status` while the daemon holds the store. Errors (a full disk) are ignored: status
   * is advisory and the condition is in the status itself.
   */
  writeStatusFile(path: string): void {
    try {
      writeFileSync(`${path}.tmp`, `${JSON.stringify(this.status(), null, 2)}\n`);
      renameSync(`${path}.tmp`, path);
    } catch {
      // see above
    }
  }

  /** Stops: waits for the running cycle, then refuses new ones. Writes nothing (open-chunk records stay in the kernel). */
  async close(): Promise<void> {
    const release = await this.#mutex.lock();
    this.#closed = true;
    release();
  }
}
