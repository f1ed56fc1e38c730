/**
 * Offline verification of evidence bundles (design.md "Serving"; format in `serve/bundle.ts`),
 * one bundle after the other, with state carried between them so a verifier can also start from a
 * checkpoint it verified earlier instead of from record 0 (as Keylime's incremental
 * attestation state does, `keylime/agentstates.py`).
 *
 * Checks, in the order the evidence is walked, stopping at the FIRST failure:
 * - bundle continuity: each bundle starts at the cursor the previous one ended at;
 * - chunk chain: consecutive first indexes, each `prevHash` = SHA-256 of the previous chunk's bytes,
 *   a boot's first chunk at index 0 with no `prevHash`;
 * - replay: every record is extended into every bank of its boot; the SHA-1 template digest is
 *   checked against the data; each chunk's stored replay state equals the replay;
 * - each checkpoint: AK name, quote signature and PCR digest (`verifyQuote`), nonce chain and clock
 *   order against the checkpoint before it (`chain.ts`), and its PCR values equal to the replay of
 *   records 0..count-1.
 *
 * Memory: one bundle (bounded by the exporter) and one chunk's records at a time.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { bytesEqual, convertTemplateData, ImaError, PcrReplay, toHex, type BankMode, type BankName, type ImaRecord, type PcrReplayState } from '../ima/index.js';
import { chunkHash, chunkRecords, decodeCheckpoint, decodeChunk, StoreError, type BootInfo, type Checkpoint, type Chunk } from '../store/index.js';
import { decodeBundle, formatCursor, type BundleSegment, type EvidenceBundle, type EvidenceCursor } from '../serve/bundle.js';
import { parseQuoteAttest, publicKeyFromTpm2b, parseTpm2bPublic, QuoteVerifyError, tpmName, verifyQuote, type ClockInfo } from '../tpm/index.js';
import { chainedNonce, clockOrderViolation, type QuoteLink } from './chain.js';
import { VerifyError, type VerifyErrorDetails } from './errors.js';

/** Where verification got to: enough to verify the next bundle, or to start from a checkpoint. */
export interface VerifyState {
  /** The cursor the next bundle must start at. */
  readonly cursor: EvidenceCursor;
  /** Replay state after records 0..cursor.index-1 of the cursor's boot (trusted: it was verified). */
  readonly replay: PcrReplayState;
  /** SHA-256 of the last verified chunk of that boot; null at a boot's start. */
  readonly lastChunkHash: Uint8Array | null;
  /** The last verified checkpoint's boot, quote (nonce chain) and clock (order), or null before the first. */
  readonly lastQuote: (QuoteLink & { readonly boot: number; readonly clock: ClockInfo }) | null;
}

/** Options of {@link EvidenceVerifier}. */
export interface VerifierOptions {
  /** The AK the verifier trusts (enrolled out of band); without it the bundle's AK is used as is (TOFU). */
  readonly trustedAk?: KeyObject;
  /** State from an earlier verification (or a checkpoint): the first bundle must start at its cursor. */
  readonly state?: VerifyState;
}

/** What one boot segment of a bundle held. */
export interface SegmentReport {
  readonly boot: number;
  /** The boot's metadata as the bundle states it (the kernel boot id and resetCount are attested by the quotes). */
  readonly info: BootInfo;
  /** Global index of the segment's first record, and one past its last. */
  readonly from: number;
  readonly to: number;
  readonly chunks: number;
  /** Record counts of the checkpoints verified. */
  readonly checkpoints: readonly number[];
  /** How the replay's start was known: record 0, the verifier's own state, or the bundle's claim. */
  readonly start: 'boot' | 'state' | 'claimed';
  /**
   * SHA-256 of the segment's last chunk (hex), or null without chunks. Everything before it is
   * bound to it by the chunk chain; the last chunk's own bytes are bound by the next bundle's first
   * `prevHash`. (A record's template name is not in IMA's template hash, docs/ima-formats.md#template-digest, so
   * the chain is what covers it.)
   */
  readonly chainHead: string | null;
}

/** What one bundle held, once verified. */
export interface BundleReport {
  readonly cursor: string;
  readonly next: string;
  /** The device identity the bundle states (informational: not attested). */
  readonly deviceId: string | null;
  readonly segments: readonly SegmentReport[];
  /** True when the AK was compared with a trusted one; false when taken from the bundle. */
  readonly akTrusted: boolean;
}

const hex = (b: Uint8Array | null): string => (b === null ? 'null' : toHex(b));

function corrupt(message: string, details: VerifyErrorDetails, cause: unknown): VerifyError {
  const causeCode = cause instanceof StoreError || cause instanceof ImaError ? cause.code : undefined;
  return new VerifyError('VERIFY_BUNDLE_CORRUPT', message, causeCode === undefined ? details : { ...details, causeCode }, { cause });
}

/** Runs `decode`, turning store/ima decode errors into `VERIFY_BUNDLE_CORRUPT`. */
function decoded<T>(decode: () => T, what: string, details: VerifyErrorDetails): T {
  try {
    return decode();
  } catch (e) {
    if (e instanceof StoreError || e instanceof ImaError) throw corrupt(`${what}: ${e.message}`, details, e);
    throw e;
  }
}

function sameCursor(a: EvidenceCursor, b: EvidenceCursor): boolean {
  return a.boot === b.boot && a.index === b.index && a.checkpoint === b.checkpoint;
}

/** Verifies bundles in order, carrying the state between them. */
export class EvidenceVerifier {
  readonly #trustedAk: KeyObject | undefined;
  #state: VerifyState | undefined;

  constructor(options: VerifierOptions = {}) {
    this.#trustedAk = options.trustedAk;
    this.#state = options.state;
  }

  /** State after the last verified bundle (undefined before the first). */
  get state(): VerifyState | undefined {
    return this.#state;
  }

  /** Verifies one bundle's bytes; throws {@link VerifyError} at the first failure. */
  verify(bytes: Uint8Array): BundleReport {
    const bundle = decoded(() => decodeBundle(bytes), 'bundle', { check: 'bundle-decode' });
    const state = this.#state;
    if (state !== undefined && !sameCursor(bundle.cursor, state.cursor)) {
      throw new VerifyError(
        'VERIFY_CHAIN_GAP',
        `bundle starts at cursor ${formatCursor(bundle.cursor)}, the evidence verified so far ends at ${formatCursor(state.cursor)}`,
        { check: 'bundle-cursor', boot: bundle.cursor.boot, expected: formatCursor(state.cursor), got: formatCursor(bundle.cursor) },
      );
    }
    const ak = this.#akOf(bundle);
    const segments: SegmentReport[] = [];
    let expected: EvidenceCursor = bundle.cursor;
    // The state advances only once the whole bundle verified: a failed bundle leaves it as it was.
    let reached: VerifyState | undefined = state;
    for (const segment of bundle.segments) {
      if (segment.boot !== expected.boot) {
        throw new VerifyError('VERIFY_CHAIN_GAP', `bundle segment for boot ${segment.boot} where boot ${expected.boot} was due`, {
          check: 'segment-boot',
          boot: segment.boot,
          expected: String(expected.boot),
          got: String(segment.boot),
        });
      }
      const carried = reached !== undefined && reached.cursor.boot === segment.boot ? reached : undefined;
      const result = new SegmentWalk(segment, expected, ak, reached?.lastQuote ?? null, carried).run();
      segments.push(result.report);
      reached = { cursor: result.end, replay: result.replay, lastChunkHash: result.lastChunkHash, lastQuote: result.lastQuote };
      expected = { boot: segment.boot + 1, index: 0, checkpoint: 0 };
    }
    // The bundle's `next` is where its content ends, or the next boot's start once a boot is complete.
    const end = reached?.cursor ?? bundle.cursor;
    const movedOn = bundle.segments.length > 0 && sameCursor(bundle.next, expected);
    if (!sameCursor(end, bundle.next) && !movedOn) {
      throw new VerifyError('VERIFY_CHAIN_GAP', `bundle says it ends at ${formatCursor(bundle.next)}, its content ends at ${formatCursor(end)}`, {
        check: 'bundle-next',
        expected: formatCursor(end),
        got: formatCursor(bundle.next),
      });
    }
    if (reached !== undefined) this.#state = { ...reached, cursor: bundle.next, ...(movedOn ? { lastChunkHash: null } : {}) };
    return { cursor: formatCursor(bundle.cursor), next: formatCursor(bundle.next), deviceId: bundle.deviceId, segments, akTrusted: this.#trustedAk !== undefined };
  }

  #akOf(bundle: EvidenceBundle): { key: KeyObject; name: Uint8Array } | undefined {
    if (bundle.akPublic === null) return undefined;
    const akPublic = bundle.akPublic;
    const parsed = decoded(
      () => {
        try {
          return { key: publicKeyFromTpm2b(akPublic), name: tpmName(parseTpm2bPublic(akPublic)) };
        } catch (e) {
          throw new StoreError('STORE_CORRUPT', `AK public does not parse: ${e instanceof Error ? e.message : String(e)}`, { key: 'bundle .akPublic' }, { cause: e });
        }
      },
      'bundle AK',
      { check: 'ak-decode' },
    );
    const trusted = this.#trustedAk;
    if (trusted !== undefined) {
      const want = trusted.export({ type: 'spki', format: 'der' });
      const got = parsed.key.export({ type: 'spki', format: 'der' });
      if (!want.equals(got)) {
        throw new VerifyError('VERIFY_AK', 'the bundle AK is not the trusted AK', { check: 'ak-trusted', expected: want.toString('hex'), got: got.toString('hex') });
      }
    }
    return parsed;
  }
}

interface SegmentResult {
  readonly report: SegmentReport;
  readonly end: EvidenceCursor;
  readonly replay: PcrReplayState;
  readonly lastChunkHash: Uint8Array | null;
  readonly lastQuote: VerifyState['lastQuote'];
}

/** Banks a boot replays: its recorded modes, and the SHA-1 bank the legacy list always has. */
function replayBanks(segment: BundleSegment): Partial<Record<BankName, BankMode>> {
  return { sha1: 'native', ...segment.info.bankModes };
}

/** One boot segment's walk: chunks, records and checkpoints in index order. */
class SegmentWalk {
  readonly #segment: BundleSegment;
  readonly #boot: number;
  readonly #from: EvidenceCursor;
  readonly #ak: { key: KeyObject; name: Uint8Array } | undefined;
  readonly #replay: PcrReplay;
  readonly #start: SegmentReport['start'];
  readonly #checkpoints: Checkpoint[];
  #lastQuote: VerifyState['lastQuote'];
  #lastChunkHash: Uint8Array | null;
  #nextCheckpoint = 0;
  readonly #verified: number[] = [];

  constructor(segment: BundleSegment, from: EvidenceCursor, ak: { key: KeyObject; name: Uint8Array } | undefined, lastQuote: VerifyState['lastQuote'], carried: VerifyState | undefined) {
    this.#segment = segment;
    this.#boot = segment.boot;
    this.#from = from;
    this.#ak = ak;
    this.#lastQuote = lastQuote;
    const boot = segment.boot;
    let start: PcrReplayState;
    if (from.index === 0) {
      start = { recordCount: 0, banks: [] };
      this.#start = 'boot';
    } else if (carried !== undefined) {
      start = carried.replay;
      this.#start = 'state';
    } else if (segment.start !== null) {
      start = segment.start;
      this.#start = 'claimed';
    } else if (segment.chunks.length === 0) {
      start = { recordCount: from.index, banks: [] };
      this.#start = 'claimed';
    } else {
      throw new VerifyError('VERIFY_CHAIN_GAP', `boot ${boot}: the bundle starts at record ${from.index} without a replay state to start from`, {
        check: 'segment-start',
        boot,
        index: from.index,
      });
    }
    this.#lastChunkHash = from.index === 0 ? null : (carried?.lastChunkHash ?? null);
    this.#replay = this.#startReplay(start);
    this.#checkpoints = segment.checkpoints.map((bytes, i) =>
      decoded(() => decodeCheckpoint(bytes, `checkpoint ${i} of boot ${boot}`), `checkpoint ${i} of boot ${boot}`, { check: 'checkpoint-decode', boot }),
    );
  }

  #startReplay(start: PcrReplayState): PcrReplay {
    const boot = this.#boot;
    if (start.recordCount !== this.#from.index) {
      throw new VerifyError('VERIFY_CHAIN_GAP', `boot ${boot}: replay state counts ${start.recordCount} records, the segment starts at ${this.#from.index}`, {
        check: 'segment-start',
        boot,
        expected: String(this.#from.index),
        got: String(start.recordCount),
      });
    }
    const banks = replayBanks(this.#segment);
    const values: Partial<Record<BankName, Record<number, Uint8Array>>> = {};
    for (const b of start.banks) values[b.bank] = Object.fromEntries(b.pcrs.map((p) => [p.pcr, p.value]));
    const endian = this.#segment.info.endianness;
    return decoded(() => new PcrReplay({ banks, start: values, recordCount: start.recordCount, endian }), `boot ${boot} start state`, {
      check: 'segment-start',
      boot,
    });
  }

  run(): SegmentResult {
    const boot = this.#boot;
    let next = this.#from.index;
    this.#checkpointsAt(next);
    this.#segment.chunks.forEach((bytes, i) => {
      const key = `chunk ${i} of boot ${boot}`;
      const chunk = decoded(() => decodeChunk(bytes, key), key, { check: 'chunk-decode', boot });
      this.#link(chunk, next);
      const records = decoded(() => this.#asKernelShowed(chunkRecords(chunk, key)), key, { check: 'chunk-decode', boot, chunk: chunk.firstIndex });
      for (const record of records) {
        const index = this.#replay.recordCount;
        try {
          this.#replay.extend(record);
        } catch (e) {
          if (!(e instanceof ImaError)) throw e;
          throw new VerifyError('VERIFY_REPLAY', `boot ${boot} record ${index}: ${e.message}`, { check: 'record-digest', boot, index, chunk: chunk.firstIndex, causeCode: e.code }, { cause: e });
        }
        this.#checkpointsAt(this.#replay.recordCount);
      }
      this.#chunkState(chunk);
      next = chunk.firstIndex + chunk.count;
      this.#lastChunkHash = chunkHash(bytes);
    });
    const left = this.#checkpoints[this.#nextCheckpoint];
    if (left !== undefined) {
      throw new VerifyError('VERIFY_CHAIN_GAP', `boot ${boot}: checkpoint ${left.count} covers records past the segment's end ${next}, or is out of order`, {
        check: 'checkpoint-order',
        boot,
        checkpoint: left.count,
        expected: `count in ${this.#from.index}..${next}`,
        got: String(left.count),
      });
    }
    const lastVerified = this.#verified.at(-1);
    return {
      report: {
        boot,
        info: this.#segment.info,
        from: this.#from.index,
        to: next,
        chunks: this.#segment.chunks.length,
        checkpoints: this.#verified,
        start: this.#start,
        chainHead: this.#segment.chunks.length === 0 ? null : hex(this.#lastChunkHash),
      },
      end: { boot, index: next, checkpoint: lastVerified === undefined ? this.#from.checkpoint : lastVerified + 1 },
      replay: this.#replay.toState(),
      lastChunkHash: this.#lastChunkHash,
      lastQuote: this.#lastQuote,
    };
  }

  /**
   * Records with their template data in the byte order the kernel showed them: chunks hold it
   * little-endian, but a big-endian kernel's template digests cover its big-endian data
   * (docs/ima-formats.md#binary-record, #template-digest), so that is what the replay must hash.
   */
  #asKernelShowed(records: ImaRecord[]): ImaRecord[] {
    if (this.#segment.info.endianness === 'le') return records;
    return records.map((r) => ({ ...r, data: convertTemplateData(r.template, r.data, 'le', 'be') }));
  }

  /** The chunk must start where the last one ended and link to its bytes. */
  #link(chunk: Chunk, next: number): void {
    const boot = this.#boot;
    if (chunk.firstIndex !== next) {
      throw new VerifyError('VERIFY_CHAIN_GAP', `boot ${boot}: chunk starts at record ${chunk.firstIndex}, record ${next} was due`, {
        check: 'chunk-index',
        boot,
        chunk: chunk.firstIndex,
        index: next,
        expected: String(next),
        got: String(chunk.firstIndex),
      });
    }
    const want = this.#lastChunkHash;
    const claimedStart = want === null && next > 0;
    if (!claimedStart && !(want === null ? chunk.prevHash === null : chunk.prevHash !== null && bytesEqual(chunk.prevHash, want))) {
      throw new VerifyError('VERIFY_CHAIN_GAP', `boot ${boot}: chunk ${chunk.firstIndex} does not link to the chunk before it`, {
        check: 'chunk-link',
        boot,
        chunk: chunk.firstIndex,
        expected: hex(want),
        got: hex(chunk.prevHash),
      });
    }
  }

  /** The chunk's stored replay state must equal the replay after its last record. */
  #chunkState(chunk: Chunk): void {
    const boot = this.#boot;
    const end = chunk.firstIndex + chunk.count;
    if (chunk.replay.recordCount !== end) {
      throw new VerifyError('VERIFY_REPLAY', `boot ${boot}: chunk ${chunk.firstIndex} stores a replay state after ${chunk.replay.recordCount} records, not ${end}`, {
        check: 'chunk-state',
        boot,
        chunk: chunk.firstIndex,
        expected: String(end),
        got: String(chunk.replay.recordCount),
      });
    }
    for (const b of chunk.replay.banks) {
      for (const p of b.pcrs) {
        const got = this.#replayValue(b.bank, p.pcr, { check: 'chunk-state', boot, chunk: chunk.firstIndex });
        if (!bytesEqual(got, p.value)) {
          throw new VerifyError('VERIFY_REPLAY', `boot ${boot}: chunk ${chunk.firstIndex} stores ${b.bank} PCR ${p.pcr} = ${toHex(p.value)}, the replay gives ${toHex(got)}`, {
            check: 'chunk-state',
            boot,
            chunk: chunk.firstIndex,
            index: end - 1,
            expected: toHex(got),
            got: toHex(p.value),
          });
        }
      }
    }
  }

  #replayValue(bank: BankName, pcr: number, details: VerifyErrorDetails): Uint8Array {
    if (replayBanks(this.#segment)[bank] === undefined) {
      throw new VerifyError('VERIFY_REPLAY', `boot ${this.#boot}: ${bank} is not a bank of this boot`, { ...details, expected: Object.keys(replayBanks(this.#segment)).join(','), got: bank });
    }
    return this.#replay.value(bank, pcr);
  }

  /** Verifies every checkpoint covering exactly `count` records (the replay is at `count`). */
  #checkpointsAt(count: number): void {
    for (let c = this.#checkpoints[this.#nextCheckpoint]; c !== undefined && c.count <= count; c = this.#checkpoints[this.#nextCheckpoint]) {
      if (c.count < count) {
        throw new VerifyError('VERIFY_CHAIN_GAP', `boot ${this.#boot}: checkpoint ${c.count} covers records before the evidence in hand (from ${count})`, {
          check: 'checkpoint-order',
          boot: this.#boot,
          checkpoint: c.count,
          expected: `count >= ${count}`,
          got: String(c.count),
        });
      }
      this.#checkpoint(c);
      this.#verified.push(c.count);
      this.#nextCheckpoint++;
    }
  }

  #checkpoint(c: Checkpoint): void {
    const boot = this.#boot;
    const where = { boot, checkpoint: c.count };
    const ak = this.#ak;
    if (ak === undefined) throw new VerifyError('VERIFY_AK', `boot ${boot}: checkpoint ${c.count} but the bundle has no AK`, { check: 'ak-present', ...where });
    if (!bytesEqual(c.akName, ak.name)) {
      throw new VerifyError('VERIFY_AK', `boot ${boot}: checkpoint ${c.count} names another AK`, { check: 'ak-name', ...where, expected: toHex(ak.name), got: toHex(c.akName) });
    }
    try {
      verifyQuote({ attest: c.attest, signature: c.signature, akPublic: ak.key, nonce: c.nonce, pcrs: c.pcrs });
    } catch (e) {
      if (!(e instanceof QuoteVerifyError)) throw e;
      throw new VerifyError('VERIFY_SIGNATURE', `boot ${boot}: checkpoint ${c.count}: ${e.message}`, { check: 'quote', ...where, causeCode: e.code }, { cause: e });
    }
    const clock = parseQuoteAttest(c.attest).clockInfo;
    this.#checkNonce(c);
    const info = this.#segment.info;
    if (info.resetCount !== null && clock.resetCount !== info.resetCount) {
      throw new VerifyError('VERIFY_CLOCK_ORDER', `boot ${boot}: checkpoint ${c.count} was quoted at TPM resetCount ${clock.resetCount}, the boot began at ${info.resetCount}`, {
        check: 'reset-count',
        ...where,
        expected: String(info.resetCount),
        got: String(clock.resetCount),
      });
    }
    const previous = this.#lastQuote;
    const violation = previous === null ? (clock.safe ? null : 'the TPM clock is not safe') : clockOrderViolation(previous.clock, clock);
    if (violation !== null) {
      throw new VerifyError('VERIFY_CLOCK_ORDER', `boot ${boot}: checkpoint ${c.count}: ${violation}`, {
        check: 'clock-order',
        ...where,
        expected: previous === null ? 'safe 1' : `after reset ${previous.clock.resetCount} restart ${previous.clock.restartCount} clock ${previous.clock.clock}`,
        got: `reset ${clock.resetCount} restart ${clock.restartCount} clock ${clock.clock} safe ${clock.safe ? 1 : 0}`,
      });
    }
    for (const p of c.pcrs) {
      const got = this.#replayValue(p.bank, p.pcr, { check: 'checkpoint-replay', ...where });
      if (!bytesEqual(got, p.value)) {
        throw new VerifyError('VERIFY_REPLAY', `boot ${boot}: records 0..${c.count - 1} replay ${p.bank} PCR ${p.pcr} to ${toHex(got)}, checkpoint ${c.count} quotes ${toHex(p.value)}`, {
          check: 'checkpoint-replay',
          ...where,
          index: c.count - 1,
          expected: toHex(p.value),
          got: toHex(got),
        });
      }
    }
    this.#lastQuote = { boot, attest: c.attest, signature: c.signature, clock };
  }

  /**
   * The nonce chain (`chain.ts`): from the boot's previous checkpoint when it is known, from the
   * kernel boot id for the boot's first checkpoint; unchecked for the first checkpoint of evidence
   * that starts mid-boot without a carried state (its predecessor is not in hand).
   */
  #checkNonce(c: Checkpoint): void {
    const previous = this.#lastQuote?.boot === this.#boot ? this.#lastQuote : undefined;
    const bootStart = this.#from.index === 0 && this.#from.checkpoint === 0 && this.#verified.length === 0;
    if (previous === undefined && !bootStart) return;
    const want = chainedNonce(previous, this.#segment.info.kernelBootId);
    if (!bytesEqual(c.nonce, want)) {
      throw new VerifyError(
        'VERIFY_NONCE_CHAIN',
        `boot ${this.#boot}: checkpoint ${c.count} was not quoted with ${previous === undefined ? "the boot's first nonce" : 'H(previous attest ‖ signature)'}`,
        { check: 'nonce-chain', boot: this.#boot, checkpoint: c.count, expected: toHex(want), got: toHex(c.nonce) },
      );
    }
  }
}

/** A trusted AK from a PEM (SPKI) public key, as `tpm2_checkquote -u` takes it; `VERIFY_AK` if it does not parse. */
export function trustedAkFromPem(pem: string | Uint8Array): KeyObject {
  try {
    return createPublicKey(typeof pem === 'string' ? pem : Buffer.from(pem));
  } catch (e) {
    throw new VerifyError('VERIFY_AK', `the trusted AK is not a PEM public key: ${e instanceof Error ? e.message : String(e)}`, { check: 'trusted-ak' }, { cause: e });
  }
}
