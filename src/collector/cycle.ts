/**
 * The cycle's first steps (design.md "The cycle"): read the kernel's lists, commit the records in
 * chunks, quote, read what arrived meanwhile, match the quote to the stored records, store the
 * checkpoint. Removal (removal.ts) then removes what a checkpoint covers.
 *
 * In-memory state changes only after the write it mirrors reached disk, so a failed write
 * (ENOSPC) leaves the cycle where it was and the next one continues.
 */
import { bytesEqual } from '../base/bytes.js';
import { BinaryListParser, PcrReplay, binaryRecordLength, fitsNow, replayUntilFits, toHex, type ImaRecord, type PcrReplayState } from '../ima/index.js';
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
  /** Further quotes a cycle may take so that exports reach every stored record (`Cycle.attestStored`). */
  readonly exportQuoteAttempts: number;
}

/** What an attestation found. */
export type Attestation =
  /** The quote was matched (a checkpoint was stored if it covers more than the last one). */
  | { readonly tpmReset: false }
  /** The quote's resetCount is not the segment's: the TPM was reset, nothing was stored. */
  | { readonly tpmReset: true; readonly resetCount: number };

const NO_RESET: Attestation = { tpmReset: false };

/** A quote taken with the next checkpoint's nonce, and the stored count that nonce is anchored at. */
interface Quoted {
  readonly tpmReset: false;
  readonly quote: SignedQuote;
  readonly nonce: Uint8Array;
  readonly anchor: number;
}

/** The shortest prefix of the records whose replay fits a quote. */
interface QuoteFit {
  readonly count: number;
  readonly replay: PcrReplay;
  readonly pcrs: PcrValue[];
}

/**
 * Whether the newest checkpoint leaves stored records out of every export, so that a further
 * quote anchored at the stored count is worth its TPM time (the trigger of `Cycle.attestStored`).
 *
 * Exports reach every stored record only once a checkpoint is anchored at the stored count and
 * covers no record past it. Two conditions, both needed:
 * - the newest checkpoint's anchor is behind the stored count: otherwise it already ends an
 *   export at the stored count (its count <= its anchor), or nothing was stored since its quote;
 * - a stored record past its count extends the quoted PCR (`coverable`: one past the last such
 *   record): a further checkpoint must cover more records than the newest (checkpoints are keyed
 *   by count, docs/store.md#checkpoints), and records of other PCRs leave the quoted value as it
 *   is, so without such a record a further quote could store nothing.
 * A quiet device meets neither after its cycle (the cycle's quote is anchored at, and covers,
 * every stored record it can), so it never quotes more than once a cycle; an appending one
 * quotes at most `exportQuoteAttempts` more times a cycle.
 */
export function exportLags(newest: Pick<Checkpoint, 'count' | 'anchor'> | undefined, stored: number, coverable: number): boolean {
  return (newest?.anchor ?? 0) < stored && (newest?.count ?? 0) < Math.min(stored, coverable);
}

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

/** Where a chunk ends in a run of records read: after `records` records, `end` bytes, with the replay state there. */
interface ChunkCut {
  readonly end: number;
  readonly records: number;
  readonly replay: PcrReplayState;
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
  /**
   * One past the last record read that extends the IMA PCR: no quote can cover more records than
   * this. After a restart, the newest checkpoint's count until such a record is read.
   */
  #coverableEnd = 0;
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
    this.#coverableEnd = this.#lastCheckpoint?.count ?? 0;
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
    // An earlier seal failed (ENOSPC): commit first, read more only then, so that the open chunk
    // holds at most one bound plus one read window however long the store stays full (Invariant 4).
    if (chunk.shouldSeal(this.#parts.now())) await this.seal();
    for await (const batch of reader.drainBytes({ maxBatchRecords: this.#parts.readWindowRecords })) {
      const now = this.#parts.now();
      // The reader's position is already past the whole batch: every record of it must reach the
      // open chunk even when a seal fails half-way (ENOSPC), or the next drain would skip the
      // rest (a gap that only QUOTE_MISMATCH would catch). So a failed seal is rethrown after it.
      let sealFailure: { readonly error: unknown } | undefined;
      for (const part of batch.parts) {
        // Each record is replayed as the parser reaches it and dropped: none outlives its use, so
        // the young generation's scavenges find nothing of the batch to copy (a batch of record
        // objects was copied and promoted by each, under the daemon's 1 MiB semi-space). Then the
        // part's bytes, which already are the chunk's records, go into the open chunk in one copy
        // per chunk instead of being encoded record by record. Measured (`node dist/bench/ingest.js
        // --records 50000 --flavor n`, 5 alternated runs at load 7-8, medians): CPU inside the
        // cycle 24.5 -> 22.4 µs/record, main thread 13.6 -> 12.3 (bench/results/lean.md, "Session 3").
        const { cuts, records } = this.#replayPart(part, now);
        let from = 0;
        let added = 0;
        for (const cut of cuts) {
          chunk.addRecords(part.subarray(from, cut.end), cut.records - added, now);
          from = cut.end;
          added = cut.records;
          // Seal at the record that reaches the bound, not at the end of the read batch: a batch
          // of 4096 records is ~1 MB, and chunks that large made LevelDB's mmapped tables
          // (RssFile) grow past the configured bound (bench/ingest.ts, 1M records: 1-1.3 MB chunks).
          if (sealFailure !== undefined) continue;
          try {
            await this.seal(cut.replay);
          } catch (error) {
            sealFailure = { error };
          }
        }
        chunk.addRecords(part.subarray(from), records - added, now);
      }
      if (sealFailure !== undefined) throw sealFailure.error;
    }
  }

  /**
   * Replays the records of `part` (whole records of the SHA-1 binary list) into the drain replay,
   * and returns how many it holds and where the open chunk reaches a bound in it: the byte end and
   * record count in the part of each chunk's last record, with the replay state after it.
   */
  #replayPart(part: Uint8Array, now: number): { readonly cuts: readonly ChunkCut[]; readonly records: number } {
    const chunk = this.#openChunk;
    const banks = this.segment.banks.length;
    const pcr = this.#parts.pcr;
    const replay = this.#replayAtDrain;
    const firstIndex = chunk.nextIndex;
    const cuts: ChunkCut[] = [];
    let records = 0;
    let bytes = 0;
    let sealedBytes = 0;
    new BinaryListParser().pushEach(part, (rec) => {
      replay.extend(rec);
      this.#lastDrainedPcr = rec.pcr;
      records++;
      bytes += binaryRecordLength(rec);
      if (rec.pcr === pcr) this.#coverableEnd = firstIndex + records;
      this.#kernelMemory.sample(rec, banks);
      if (chunk.sealsAfter(bytes, sealedBytes, now)) {
        cuts.push({ end: bytes, records, replay: replay.toState() });
        sealedBytes = bytes;
      }
    });
    return { cuts, records };
  }

  /** Commits the open chunk (one synced put), with the drain replay's state after its last record (default: now). */
  async seal(replay?: PcrReplayState): Promise<void> {
    const chunk = this.#openChunk;
    if (chunk.count === 0) return;
    const { store, metrics } = this.#parts;
    const draft = chunk.draft(replay ?? this.#replayAtDrain.toState());
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
    await this.seal(); // the nonce binds the chunk chain: what was read goes into it first
    const quoted = await this.#quote();
    if (quoted.tpmReset) return quoted;
    // Records the kernel logged before the quote may be in its PCR values: read them first.
    await this.drain();
    await this.seal();
    const found = await this.#match(quoted.quote);
    if (found.fit === undefined) throw await this.#mismatch(found.replayedAll);
    await this.#storeCheckpoint(quoted, found.fit);
    return NO_RESET;
  }

  /**
   * Further quotes after the cycle's, anchored at the stored count, while the newest checkpoint
   * leaves stored records out of every export ({@link exportLags}), at most `exportQuoteAttempts`.
   *
   * Why: an export ends at an anchor whose checkpoint covers no record past it (a verifier needs
   * every record sent bound by a nonce sent, docs/store.md#nonce-chain). Under constant appends the
   * cycle's checkpoint rarely is one: records logged and extended between the drain and the quote
   * put its count past its anchor, and those read after the quote put the stored count past both;
   * with every checkpoint like that, exports stall. So each attempt reads the kernel, commits,
   * quotes with the nonce anchored at the stored count, and matches the quote against the stored
   * records only, without reading the kernel again: a checkpoint it stores has count <= anchor =
   * the stored count, and the export reaches every stored record. When the TPM has extended records
   * past the anchor meanwhile (the kernel logs and extends on its own), the quote fits no stored
   * prefix: nothing is stored, and the next attempt (or the next cycle) tries again with those
   * records committed. That is no mismatch: the cycle's own quote checks the log against the TPM.
   * A kernel that extends records in every such window defeats it (no quote then has its count at
   * or before its anchor); the attempts bound what that costs.
   */
  async attestStored(): Promise<Attestation> {
    for (let attempt = 0; attempt < this.#parts.exportQuoteAttempts && exportLags(this.#lastCheckpoint, this.#storedRecords + this.#openChunk.count, this.#coverableEnd); attempt++) {
      await this.drain();
      await this.seal();
      // The seal is a synced write, long enough for the kernel to log more: read once more, and
      // quote only when nothing arrived (else the next attempt commits it first).
      await this.drain();
      if (this.#openChunk.count > 0) continue;
      const quoted = await this.#quote();
      if (quoted.tpmReset) return quoted;
      const found = await this.#match(quoted.quote);
      if (found.fit !== undefined) await this.#storeCheckpoint(quoted, found.fit);
    }
    return NO_RESET;
  }

  /** A quote of the segment's banks with the next checkpoint's nonce, anchored at the stored count. */
  async #quote(): Promise<Extract<Attestation, { readonly tpmReset: true }> | Quoted> {
    const { store, quotes, metrics } = this.#parts;
    const { boot, banks, record } = this.segment;
    const { nonce, anchor } = await nextCheckpointNonce(store, boot, this.#lastCheckpoint);
    const quote = await quotes.quote(nonce, inBanks(banks, this.#parts.pcr));
    metrics.quotes++;
    const resetCount = quote.parsed.clockInfo.resetCount;
    // resetCount moved: the TPM was reset, so its PCRs started over; this is another boot.
    if (record.resetCount !== null && resetCount !== record.resetCount) return { tpmReset: true, resetCount };
    return { tpmReset: false, quote, nonce, anchor };
  }

  /** Stores the checkpoint of a matched quote, if it covers more records than the newest one. */
  async #storeCheckpoint(quoted: Quoted, fit: QuoteFit): Promise<void> {
    const { store, metrics } = this.#parts;
    const { quote, nonce, anchor } = quoted;
    const { count, replay, pcrs } = fit;
    if (count <= (this.#lastCheckpoint?.count ?? 0)) return;
    verifySignedQuote(quote, nonce, pcrs);
    const checkpoint: Checkpoint = { count, pcrs, attest: quote.attest, signature: quote.signature, akName: quote.akName, nonce, pcrBlob: encodePcrBlob(pcrs), anchor };
    await store.storeCheckpoint(this.segment.boot, checkpoint);
    if (store.meta.akPublic === null) await store.updateMeta({ akPublic: quote.akPublic });
    this.#lastCheckpoint = checkpoint;
    this.#replayAtCheckpoint = replay;
    metrics.checkpoints++;
    await this.#parts.step('checkpoint-stored');
  }

  /**
   * The smallest record count from the last checkpoint on whose replay gives the PCR values the
   * quote attests (docs/ima-formats.md#pcr-replay: replay until the quote matches; extra records
   * are normal), among the stored records; else the replay of them all.
   */
  async #match(quote: SignedQuote): Promise<{ readonly fit: QuoteFit } | { readonly fit: undefined; readonly replayedAll: PcrReplay }> {
    const { store, pcr } = this.#parts;
    const { boot, modes } = this.segment;
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
      if (values !== undefined) return { fit: { count: drained.recordCount, replay: PcrReplay.fromState(drained.toState(), { verifyDigests: false }), pcrs: values } };
    }
    const base = this.#replayAtCheckpoint ?? (await replayAt(store, boot, from, modes));
    this.#replayAtCheckpoint = base;
    const replay = PcrReplay.fromState(base.toState(), { verifyDigests: false });
    const records = async function* (): AsyncGenerator<ImaRecord> {
      for await (const { record } of store.records(boot, from)) yield record;
    };
    const pcrs = await replayUntilFits(target, replay, records());
    return pcrs === undefined ? { fit: undefined, replayedAll: replay } : { fit: { count: replay.recordCount, replay, pcrs } };
  }

  /**
   * `QUOTE_MISMATCH` for a quote of the cycle that fits no replay of the stored records, although
   * every record the kernel logged before the quote is stored by then: names a bank whose TPM
   * value differs from the replay of everything stored (informational).
   */
  async #mismatch(replay: PcrReplay): Promise<CollectorError> {
    const { quotes, pcr } = this.#parts;
    const { boot, banks } = this.segment;
    const from = this.#lastCheckpoint?.count ?? 0;
    const tpm = await quotes.readPcrs(inBanks(banks, pcr));
    const differs = tpm.find((v) => !bytesEqual(v.value, replay.value(v.bank, pcr))) ?? tpm[0];
    const bank = differs?.bank ?? banks[0] ?? 'sha256';
    return new CollectorError(
      'QUOTE_MISMATCH',
      `boot ${boot}: the quote of PCR ${pcr} fits no replay of records ${from}..${replay.recordCount} (${bank}: TPM ${toHex(differs?.value ?? new Uint8Array(0))}, replay ${toHex(replay.value(bank, pcr))}); nothing is removed`,
      { boot, bank, pcr, quoted: toHex(differs?.value ?? new Uint8Array(0)), replayed: toHex(replay.value(bank, pcr)), from, to: replay.recordCount },
    );
  }
}
