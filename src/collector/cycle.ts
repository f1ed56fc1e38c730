/**
 * The cycle's first steps (design.md "The cycle"): read the kernel's lists, commit the records in
 * chunks, quote, read what arrived meanwhile, match the quote to the stored records, store the
 * checkpoint. Removal (removal.ts) then removes what a checkpoint covers.
 *
 * In-memory state changes only after the write it mirrors reached disk, so a failed write
 * (ENOSPC) leaves the cycle where it was and the next one continues.
 */
import { PcrReplay, bytesEqual, fitsNow, replayUntilFits, toHex, type ImaRecord } from '../ima/index.js';
import { recordKmem, type MeasurementListReader } from '../kernel/index.js';
import { ChunkBuilder, nextCheckpointNonce, replayAt, type ChunkBounds, type Checkpoint, type ImaStore } from '../store/index.js';
import { encodePcrBlob, quoteTarget, verifySignedQuote, type PcrValue, type QuoteSource, type SignedQuote } from '../tpm/index.js';
import type { CollectorStep } from './config.js';
import { CollectorError } from './errors.js';
import type { KernelLists } from './kernel-log.js';
import type { CollectorMetrics } from './metrics.js';
import { inBanks, type BootSegment } from './segments.js';

/** What the cycle reads, writes and reports to. */
export interface CycleParts {
  readonly store: ImaStore;
  readonly quotes: QuoteSource;
  /** The kernel's lists, read at their drain position. */
  readonly lists: KernelLists;
  /** The IMA PCR. */
  readonly pcr: number;
  readonly chunkBounds: ChunkBounds;
  /** Records held from one read of a list before they go to the open chunk. */
  readonly readWindowRecords: number;
  readonly metrics: CollectorMetrics;
  /** Clock (ms since the epoch). */
  readonly now: () => number;
  /** The crash seam: called after each named step. */
  readonly step: (step: CollectorStep) => Promise<void>;
}

/** What an attestation found. */
export type Attestation =
  /** The quote was matched (a checkpoint was stored if it covers more than the last one). */
  | { readonly tpmReset: false }
  /** The quote's resetCount is not the segment's: the TPM was reset, nothing was stored. */
  | { readonly tpmReset: true; readonly resetCount: number };

/**
 * Running mean of the modeled kernel memory per record (docs/kernel.md#kernel-memory-per-record),
 * over the first records read: enough for the schedule's threshold and the status.
 */
class KernelMemoryModel {
  static readonly SAMPLES = 4096;
  #meanBytes = 0;
  #samples = 0;

  get bytesPerRecord(): number {
    return this.#meanBytes;
  }

  sample(rec: ImaRecord, banks: number): void {
    if (this.#samples >= KernelMemoryModel.SAMPLES) return;
    const k = recordKmem(rec, Math.max(1, banks));
    this.#meanBytes += (k.data + k.entry - this.#meanBytes) / ++this.#samples;
  }
}

/** The cycle of one boot segment at a time: the open chunk, the replays, the last checkpoint. */
export class Cycle {
  readonly #parts: CycleParts;
  readonly #kernelMemory = new KernelMemoryModel();
  #segmentState: BootSegment | undefined;
  /** Records 0..storedRecords-1 of the segment are in committed chunks. */
  #storedRecords = 0;
  #openChunk = new ChunkBuilder(0);
  /** Replay at the open chunk's end (every record read). */
  #replayAtDrain = new PcrReplay({ banks: { sha256: 'native' } });
  /** PCR of the last record read (the one `#replayAtDrain` extended last); -1 before any. */
  #lastDrainedPcr = -1;
  #lastCheckpoint: Checkpoint | undefined;
  /** Replay at the last checkpoint's count, once computed. */
  #replayAtCheckpoint: PcrReplay | undefined;

  constructor(parts: CycleParts) {
    this.#parts = parts;
  }

  /** The open boot segment (set by {@link enter} before any other use). */
  get segment(): BootSegment {
    if (this.#segmentState === undefined) throw new CollectorError('COLLECTOR_STOPPED', 'no boot segment is open');
    return this.#segmentState;
  }

  /** The open segment's boot number in the store. */
  get boot(): number {
    return this.segment.boot;
  }

  /** Records 0..stored-1 are in committed chunks. */
  get stored(): number {
    return this.#storedRecords;
  }

  /** Records read from the kernel (stored or in the open chunk). */
  get drained(): number {
    return this.#openChunk.nextIndex;
  }

  /** The open chunk: records read and not committed yet. */
  get openChunk(): { readonly count: number; readonly byteLength: number } {
    return this.#openChunk;
  }

  get lastCheckpoint(): Checkpoint | undefined {
    return this.#lastCheckpoint;
  }

  /** Modeled kernel memory per record read (bytes). */
  get kernelBytesPerRecord(): number {
    return this.#kernelMemory.bytesPerRecord;
  }

  /** Works on `segment` from now on ({@link resume} takes it up where the store stands). */
  enter(segment: BootSegment): void {
    this.#segmentState = segment;
  }

  /**
   * Takes up the segment where the store stands (its stored count and last checkpoint). The open
   * chunk is dropped: its records are still in the kernel and are read again. The readers are
   * not positioned: {@link positionReaders} does, once recovery decided where the kernel's part begins.
   */
  async resume(): Promise<void> {
    const { boot } = this.segment;
    this.#storedRecords = await this.#parts.store.storedCount(boot);
    this.#lastCheckpoint = await this.#parts.store.lastCheckpoint(boot);
    this.#replayAtCheckpoint = undefined;
    this.#openChunk = new ChunkBuilder(this.#storedRecords);
  }

  /** Readers, open chunk and drain replay at the stored count. */
  async positionReaders(): Promise<void> {
    const { boot, modes } = this.segment;
    const { store, lists, chunkBounds } = this.#parts;
    const stored = this.#storedRecords;
    await lists.positionAfter(store, boot, stored);
    this.#openChunk = new ChunkBuilder(stored, chunkBounds);
    const replay = await replayAt(store, boot, stored, modes);
    this.#replayAtDrain = PcrReplay.fromState(replay.toState(), { verifyDigests: false });
    this.#lastDrainedPcr = -1;
  }

  /** Reads the kernel from the drain position to the end: the staged list first, if any. */
  async drain(): Promise<void> {
    for (const reader of this.#parts.lists.toDrain(this.#openChunk.nextIndex)) await this.drainFrom(reader);
  }

  /** Reads one list from its position to its end into the open chunk, sealing at each bound. */
  async drainFrom(reader: MeasurementListReader): Promise<void> {
    const chunk = this.#openChunk;
    const banks = this.segment.banks.length;
    // An earlier seal failed (ENOSPC): commit first, read more only then, so that the open chunk
    // holds at most one bound plus one read window however long the store stays full (Invariant 4).
    if (chunk.shouldSeal(this.#parts.now())) await this.seal();
    for await (const batch of reader.drain({ maxBatchRecords: this.#parts.readWindowRecords })) {
      const now = this.#parts.now();
      // The reader's position is already past the whole batch: every record of it must reach the
      // open chunk even when a seal fails half-way (ENOSPC), or the next drain would skip the
      // rest (a gap that only QUOTE_MISMATCH would catch). So a failed seal is rethrown after it.
      let sealFailure: { readonly error: unknown } | undefined;
      for (const rec of batch.records) {
        this.#replayAtDrain.extend(rec);
        this.#lastDrainedPcr = rec.pcr;
        chunk.add(rec, now);
        this.#kernelMemory.sample(rec, banks);
        // Seal at the record that reaches the bound, not at the end of the read batch: a batch of
        // 4096 records is ~1 MB, and chunks that large made LevelDB's mmapped tables (RssFile)
        // grow past the configured bound (bench/ingest.ts, 1M records: 1-1.3 MB chunks).
        if (sealFailure === undefined && chunk.shouldSeal(now)) {
          try {
            await this.seal();
          } catch (error) {
            sealFailure = { error };
          }
        }
      }
      if (sealFailure !== undefined) throw sealFailure.error;
    }
  }

  /** Commits the open chunk (one synced put). */
  async seal(): Promise<void> {
    const chunk = this.#openChunk;
    if (chunk.count === 0) return;
    const { store, metrics } = this.#parts;
    const draft = chunk.draft(this.#replayAtDrain.toState());
    await store.appendChunk(this.segment.boot, draft);
    chunk.committed(draft);
    this.#storedRecords = draft.firstIndex + draft.count;
    metrics.chunksCommitted++;
    metrics.recordsStored += draft.count;
    metrics.bytesStored += draft.records.length;
    await this.#parts.step('chunk-committed');
  }

  /**
   * Quote, then read what arrived meanwhile and commit it, then match and store the checkpoint
   * (store/nonce.ts: the nonce binds the chunk chain up to the stored count, its anchor).
   */
  async attest(): Promise<Attestation> {
    const { store, quotes, metrics } = this.#parts;
    const { boot, banks, record } = this.segment;
    await this.seal(); // the nonce binds the chunk chain: what was read goes into it first
    const { nonce, anchor } = await nextCheckpointNonce(store, boot, this.#lastCheckpoint);
    const quote = await quotes.quote(nonce, inBanks(banks, this.#parts.pcr));
    metrics.quotes++;
    const resetCount = quote.parsed.clockInfo.resetCount;
    // resetCount moved: the TPM was reset, so its PCRs started over; this is another boot.
    if (record.resetCount !== null && resetCount !== record.resetCount) return { tpmReset: true, resetCount };
    await this.drain();
    await this.seal();
    const { count, replay, pcrs } = await this.#match(quote);
    if (count > (this.#lastCheckpoint?.count ?? 0)) {
      verifySignedQuote(quote, nonce, pcrs);
      const checkpoint: Checkpoint = { count, pcrs, attest: quote.attest, signature: quote.signature, akName: quote.akName, nonce, pcrBlob: encodePcrBlob(pcrs), anchor };
      await store.storeCheckpoint(boot, checkpoint);
      if (store.meta.akPublic === null) await store.updateMeta({ akPublic: quote.akPublic });
      this.#lastCheckpoint = checkpoint;
      this.#replayAtCheckpoint = replay;
      metrics.checkpoints++;
      await this.#parts.step('checkpoint-stored');
    }
    return { tpmReset: false };
  }

  /**
   * The smallest record count from the last checkpoint on whose replay gives the PCR values the
   * quote attests (docs/ima-formats.md#pcr-replay: replay until the quote matches; extra records
   * are normal). Every record logged before the quote is stored by now, so no match is `QUOTE_MISMATCH`.
   */
  async #match(quote: SignedQuote): Promise<{ count: number; replay: PcrReplay; pcrs: PcrValue[] }> {
    const { store, quotes, pcr } = this.#parts;
    const { boot, modes, banks } = this.segment;
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
    const base = this.#replayAtCheckpoint ?? (await replayAt(store, boot, from, modes));
    this.#replayAtCheckpoint = base;
    const replay = PcrReplay.fromState(base.toState(), { verifyDigests: false });
    const records = async function* (): AsyncGenerator<ImaRecord> {
      for await (const { record } of store.records(boot, from)) yield record;
    };
    const pcrs = await replayUntilFits(target, replay, records());
    if (pcrs !== undefined) return { count: replay.recordCount, replay, pcrs };
    // Name a bank whose TPM value differs from the replay of everything stored (informational).
    const tpm = await quotes.readPcrs(inBanks(banks, pcr));
    const differs = tpm.find((v) => !bytesEqual(v.value, replay.value(v.bank, pcr))) ?? tpm[0];
    const bank = differs?.bank ?? banks[0] ?? 'sha256';
    throw new CollectorError(
      'QUOTE_MISMATCH',
      `boot ${boot}: the quote of PCR ${pcr} fits no replay of records ${from}..${replay.recordCount} (${bank}: TPM ${toHex(differs?.value ?? new Uint8Array(0))}, replay ${toHex(replay.value(bank, pcr))}); nothing is removed`,
      { boot, bank, pcr, quoted: toHex(differs?.value ?? new Uint8Array(0)), replayed: toHex(replay.value(bank, pcr)), from, to: replay.recordCount },
    );
  }
}
