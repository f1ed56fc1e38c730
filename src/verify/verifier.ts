/**
 * Offline verification of evidence bundles (design.md "Serving"; format in `store/bundle.ts`),
 * one bundle after the other, with state carried between them so a verifier can also start from a
 * checkpoint it verified earlier instead of from record 0 (as Keylime's incremental
 * attestation state does, `keylime/agentstates.py`).
 *
 * Checks, in the order the evidence is walked, stopping at the FIRST failure:
 * - the AK: the bundle's AK must be the trusted one (given, or trusted on first use when asked);
 * - bundle continuity: each bundle starts at the cursor the previous one ended at, and a segment's
 *   claimed start state equals the carried one;
 * - chunk chain: consecutive first indexes, each `prevHash` = SHA-256 of the previous chunk's bytes,
 *   a boot's first chunk at index 0 with no `prevHash`;
 * - replay: every record is extended into every bank of its boot; the SHA-1 template digest is
 *   checked against the data; each chunk's stored replay state equals the replay;
 * - each checkpoint: AK name, quote signature and PCR digest (`verifyQuote`), `pcrBlob` equal to
 *   the signed PCR values, clock order and the boot's resetCount against the signed clock info,
 *   its PCR values equal to the replay of records 0..count-1, and its nonce (`store/nonce.ts`):
 *   version 3 binds the boot metadata, the device id, the store's boot number, the chunk chain up
 *   to its anchor and the previous checkpoint; version 2 all but the boot number; version 1 the
 *   previous checkpoint or the kernel boot id;
 * - binding: every chunk of a segment lies before the anchor of a version-2 or -3 nonce checked in
 *   it (`VERIFY_UNSIGNED` otherwise), and a version-3 nonce binds its boot number. A segment with
 *   version-1 checkpoints only (a store written before version 2), or whose anchored nonces are all
 *   version 2 (written before version 3), is accepted with the fields no signature covers listed in
 *   its report, or refused with `VERIFY_UNSIGNED` when the verifier is strict.
 *
 * Memory: one bundle (bounded by the exporter) and one chunk's records at a time.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { bytesEqual } from '../base/bytes.js';
import { convertTemplateData, ImaError, PcrReplay, toHex, type BankMode, type BankName, type ImaRecord, type PcrReplayState } from '../ima/index.js';
import {
  chainedNonceV1,
  checkpointNonce,
  checkpointNonceV2,
  chunkHash,
  chunkRecords,
  decodeBundle,
  decodeCheckpoint,
  decodeChunk,
  formatCursor,
  StoreError,
  type BootInfo,
  type BundleSegment,
  type Checkpoint,
  type Chunk,
  type EvidenceCursor,
  type QuoteLink,
} from '../store/index.js';
import { encodePcrBlob, parseQuoteAttest, publicKeyFromTpm2b, parseTpm2bPublic, QuoteVerifyError, tpmName, verifyQuote, type ClockInfo } from '../tpm/index.js';
import { clockOrderViolation } from './chain.js';
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

/** Options of {@link EvidenceVerifier}: a trusted AK, or an explicit `trustOnFirstUse`. */
export interface VerifierOptions {
  /** The AK the verifier trusts (enrolled out of band, or `--ak`): the bundles' AK must be this key. */
  readonly trustedAk?: KeyObject;
  /**
   * Without `trustedAk`: trust the AK of the first bundle that has one, and hold later bundles to
   * it. Reports say so (`akTrust: 'first-use'`). Without either, the constructor throws `VERIFY_AK`.
   */
  readonly trustOnFirstUse?: boolean;
  /**
   * The device the evidence must come from (an enrollment record's `deviceId`): a bundle stating
   * another id, or none, is refused with `VERIFY_DEVICE_MISMATCH`, whichever AK signed it. The id
   * a bundle states is bound by every version-2 nonce, so a changed one fails the nonce chain.
   */
  readonly deviceId?: string;
  /** Refuse segments with fields no signature covers: version-1 or version-2 nonces only (`VERIFY_UNSIGNED`). */
  readonly strict?: boolean;
  /** State from an earlier verification (or a checkpoint): the first bundle must start at its cursor. */
  readonly state?: VerifyState;
}

/**
 * What no signature covers in a segment whose checkpoints carry the version-1 nonce
 * (`store/nonce.ts`): the kernel boot id and the records' digests are covered, these are not.
 */
export const V1_UNSIGNED_FIELDS: readonly string[] = [
  'deviceId',
  'info.firstSeen',
  'info.bankModes',
  'info.endianness',
  'info.template',
  'info.templateHash',
  'template names of records',
  'data of violation records',
  'chunks after the last checkpoint',
  'boot',
];

/**
 * What no signature covers in a segment whose anchored nonces are all version 2 (`store/nonce.ts`):
 * the store's boot number, which only version 3 binds.
 */
export const V2_UNSIGNED_FIELDS: readonly string[] = ['boot'];

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
   * bound to it by the chunk chain, and it by the nonce of a checkpoint anchored there. (A
   * record's template name is not in IMA's template hash, docs/ima-formats.md#template-digest, so the chain is what
   * covers it.)
   */
  readonly chainHead: string | null;
  /** `signed`: every field is covered by a signature; `v1`, `v2`: older nonces, see `unsigned`. */
  readonly binding: 'signed' | 'v2' | 'v1';
  /** Fields of the segment no signature covers (empty when `binding` is `signed`). */
  readonly unsigned: readonly string[];
}

/** What one bundle held, once verified. */
export interface BundleReport {
  readonly cursor: string;
  readonly next: string;
  /** The device identity the bundle states (bound by every version-2 nonce of its segments). */
  readonly deviceId: string | null;
  readonly segments: readonly SegmentReport[];
  /** `pinned`: the AK is the one the verifier was given; `first-use`: trusted on first use. */
  readonly akTrust: 'pinned' | 'first-use';
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

/** The AK checkpoints are verified with: its key and TPM name. */
interface BundleAk {
  readonly key: KeyObject;
  readonly name: Uint8Array;
}

/** What a segment walk needs from its bundle and verifier. */
interface WalkContext {
  readonly ak: BundleAk | undefined;
  readonly deviceId: string | null;
  readonly version: number;
  readonly strict: boolean;
}

/** Verifies bundles in order, carrying the state between them. */
export class EvidenceVerifier {
  #trustedAk: KeyObject | undefined;
  readonly #akTrust: BundleReport['akTrust'];
  readonly #strict: boolean;
  readonly #deviceId: string | undefined;
  #state: VerifyState | undefined;

  /** Throws `VERIFY_AK` without `trustedAk` unless `trustOnFirstUse` is set. */
  constructor(options: VerifierOptions) {
    if (options.trustedAk === undefined && options.trustOnFirstUse !== true) throw noTrustedAk();
    this.#trustedAk = options.trustedAk;
    this.#akTrust = options.trustedAk === undefined ? 'first-use' : 'pinned';
    this.#strict = options.strict === true;
    this.#deviceId = options.deviceId;
    this.#state = options.state;
  }

  /** State after the last verified bundle (undefined before the first). */
  get state(): VerifyState | undefined {
    return this.#state;
  }

  /**
   * Verifies one bundle's bytes; throws {@link VerifyError} at the first failure.
   * @example
   * ```ts
   * const verifier = new EvidenceVerifier({ trustedAk: trustedAkFromPem(await readFile('ak.pem')) });
   * const report = verifier.verify(new Uint8Array(await readFile('bundle.cbor')));
   * ```
   * @throws {VERIFY_BUNDLE_CORRUPT} the bytes are not a bundle, or a value in it does not decode
   * @throws {VERIFY_AK} the bundle's AK is not the trusted one
   * @throws {VERIFY_SIGNATURE} a checkpoint's quote signature or nonce does not verify
   * @throws {VERIFY_NONCE_CHAIN} a checkpoint does not chain to the one before it
   * @throws {VERIFY_CHAIN_GAP} chunks or bundles are not contiguous (a cursor other than the state's)
   * @throws {VERIFY_REPLAY} the records do not replay to the quoted PCR values
   * @throws {VERIFY_CLOCK_ORDER} the quotes' TPM clock goes backwards
   * @throws {VERIFY_UNSIGNED} strict: records or fields no signature covers
   */
  verify(bytes: Uint8Array): BundleReport {
    const bundle = decoded(() => decodeBundle(bytes), 'bundle', { check: 'bundle-decode' });
    if (this.#deviceId !== undefined && bundle.deviceId !== this.#deviceId) {
      throw new VerifyError('VERIFY_DEVICE_MISMATCH', `the bundle comes from device ${bundle.deviceId === null ? '(none stated)' : `'${bundle.deviceId}'`}, not the enrolled '${this.#deviceId}'`, {
        check: 'device-id',
        expected: this.#deviceId,
        got: String(bundle.deviceId),
      });
    }
    const state = this.#state;
    if (state !== undefined && !sameCursor(bundle.cursor, state.cursor)) {
      throw new VerifyError(
        'VERIFY_CHAIN_GAP',
        `bundle starts at cursor ${formatCursor(bundle.cursor)}, the evidence verified so far ends at ${formatCursor(state.cursor)}`,
        { check: 'bundle-cursor', boot: bundle.cursor.boot, expected: formatCursor(state.cursor), got: formatCursor(bundle.cursor) },
      );
    }
    if (bundle.cursor.index === 0 && bundle.cursor.checkpoint !== 0) {
      // A boot's start has no checkpoint before it: an exporter never writes this cursor.
      throw new VerifyError('VERIFY_CHAIN_GAP', `cursor ${formatCursor(bundle.cursor)} names checkpoint ${bundle.cursor.checkpoint} at a boot's start`, {
        check: 'bundle-cursor',
        boot: bundle.cursor.boot,
        expected: `${bundle.cursor.boot}.0.0`,
        got: formatCursor(bundle.cursor),
      });
    }
    const ak = this.#akOf(bundle.akPublic);
    const context: WalkContext = { ak, deviceId: bundle.deviceId, version: bundle.version, strict: this.#strict };
    const segments: SegmentReport[] = [];
    let expected: EvidenceCursor = bundle.cursor;
    // The state advances only once the whole bundle verified: a failed bundle leaves it as it was.
    let reached: VerifyState | undefined = state;
    for (const segment of bundle.segments) {
      // A later boot may follow: the exporter sends no segment for what nothing signs (the rest
      // of a finished boot past its last anchor, a boot without checkpoints).
      if (segment.boot < expected.boot) {
        throw new VerifyError('VERIFY_CHAIN_GAP', `bundle segment for boot ${segment.boot} where boot ${expected.boot} or later was due`, {
          check: 'segment-boot',
          boot: segment.boot,
          expected: `>= ${expected.boot}`,
          got: String(segment.boot),
        });
      }
      if (segment.boot > expected.boot) expected = { boot: segment.boot, index: 0, checkpoint: 0 };
      const carried = reached !== undefined && reached.cursor.boot === segment.boot ? reached : undefined;
      const result = new SegmentWalk(segment, expected, context, reached?.lastQuote ?? null, carried).run();
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
    return { cursor: formatCursor(bundle.cursor), next: formatCursor(bundle.next), deviceId: bundle.deviceId, segments, akTrust: this.#akTrust };
  }

  /** The bundle's AK, held to the trusted one (which it becomes on first use when so asked). */
  #akOf(akPublic: Uint8Array | null): BundleAk | undefined {
    if (akPublic === null) return undefined;
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
    const trusted = this.#trustedAk ?? parsed.key;
    const want = trusted.export({ type: 'spki', format: 'der' });
    const got = parsed.key.export({ type: 'spki', format: 'der' });
    if (!bytesEqual(want, got)) {
      throw new VerifyError('VERIFY_AK', `the bundle AK is not the ${this.#akTrust === 'pinned' ? 'trusted AK' : 'AK trusted on first use'}`, {
        check: 'ak-trusted',
        expected: want.toString('hex'),
        got: got.toString('hex'),
      });
    }
    this.#trustedAk = trusted;
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

/** A version-2 checkpoint whose nonce waits for the walk to reach its anchor. */
interface PendingNonce {
  readonly checkpoint: Checkpoint & { readonly anchor: number };
  /** The boot's previous checkpoint, undefined for its first, null when not in hand. */
  readonly previous: QuoteLink | undefined | null;
}

/** One boot segment's walk: chunks, records and checkpoints in index order. */
class SegmentWalk {
  readonly #segment: BundleSegment;
  readonly #boot: number;
  readonly #from: EvidenceCursor;
  readonly #context: WalkContext;
  readonly #replay: PcrReplay;
  readonly #start: SegmentReport['start'];
  readonly #checkpoints: Checkpoint[];
  #lastQuote: VerifyState['lastQuote'];
  /** The last checkpoint's quote, null while the boot's previous checkpoint is not in hand. */
  #previous: QuoteLink | undefined | null;
  #lastChunkHash: Uint8Array | null;
  /** Chain head (hash of the chunk ending there) at each chunk boundary walked. */
  readonly #heads = new Map<number, Uint8Array | null>();
  readonly #pending: PendingNonce[] = [];
  /** Records 0..bound-1 are bound by a checked nonce (or were verified before this segment). */
  #bound: number;
  /** A version-3 nonce was checked: the segment's boot number is signed. */
  #bootSigned = false;
  #nextCheckpoint = 0;
  readonly #verified: number[] = [];

  constructor(segment: BundleSegment, from: EvidenceCursor, context: WalkContext, lastQuote: VerifyState['lastQuote'], carried: VerifyState | undefined) {
    this.#segment = segment;
    this.#boot = segment.boot;
    this.#from = from;
    this.#context = context;
    this.#lastQuote = lastQuote;
    const boot = segment.boot;
    let start: PcrReplayState;
    if (from.index === 0) {
      if (segment.start !== null) throw new VerifyError('VERIFY_CHAIN_GAP', `boot ${boot}: a segment from record 0 claims a start state`, { check: 'segment-start', boot });
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
    const known = from.index === 0 || carried !== undefined;
    this.#lastChunkHash = from.index === 0 ? null : (carried?.lastChunkHash ?? null);
    if (known) this.#heads.set(from.index, this.#lastChunkHash);
    this.#bound = known ? from.index : -1;
    this.#previous = this.#previousQuote(lastQuote?.boot === boot ? lastQuote : undefined);
    this.#replay = this.#startReplay(start);
    if (this.#start === 'state' && segment.start !== null) this.#matchState(segment.start, { check: 'segment-start', boot, index: from.index });
    this.#checkpoints = segment.checkpoints.map((bytes, i) => {
      const where = { check: 'checkpoint-decode', boot };
      const c = decoded(() => decodeCheckpoint(bytes, `checkpoint ${i} of boot ${boot}`), `checkpoint ${i} of boot ${boot}`, where);
      if (c.anchor !== undefined && context.version < 2) {
        throw new VerifyError('VERIFY_BUNDLE_CORRUPT', `boot ${boot}: a version-${context.version} bundle carries checkpoint ${c.count} with a version-2 nonce`, { ...where, check: 'bundle-version' });
      }
      return c;
    });
  }

  /**
   * The quote the segment's first checkpoint's nonce chains from: none at a boot's start; the
   * boot's last verified one when carried (the segment's `previous`, if stated, must be it); else
   * the segment's `previous` as claimed (only a nonce it reproduces binds anything, so a false one
   * fails that nonce), or null when not in hand (docs/store.md#starting-mid-boot).
   */
  #previousQuote(carried: QuoteLink | undefined): QuoteLink | undefined | null {
    const boot = this.#boot;
    const stated = this.#segment.previous;
    if (this.#from.index === 0) {
      if (stated !== null) throw new VerifyError('VERIFY_CHAIN_GAP', `boot ${boot}: a segment from record 0 states a previous checkpoint`, { check: 'segment-previous', boot });
      return undefined;
    }
    if (carried === undefined) return stated;
    if (stated !== null && !(bytesEqual(stated.attest, carried.attest) && bytesEqual(stated.signature, carried.signature))) {
      throw new VerifyError('VERIFY_CHAIN_GAP', `boot ${boot}: the segment's previous checkpoint is not the last one verified`, {
        check: 'segment-previous',
        boot,
        expected: toHex(carried.signature),
        got: toHex(stated.signature),
      });
    }
    return carried;
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
      this.#heads.set(next, this.#lastChunkHash);
      this.#settleNonces(next);
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
    this.#settleNonces(next);
    const unanchored = this.#pending[0];
    if (unanchored !== undefined) {
      throw new VerifyError('VERIFY_NONCE_CHAIN', `boot ${boot}: checkpoint ${unanchored.checkpoint.count} is anchored at record ${unanchored.checkpoint.anchor}, past the segment's end ${next}`, {
        check: 'nonce-anchor',
        boot,
        checkpoint: unanchored.checkpoint.count,
        expected: `anchor <= ${next}`,
        got: String(unanchored.checkpoint.anchor),
      });
    }
    const binding = this.#binding(next);
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
        binding,
        unsigned: binding === 'v1' ? V1_UNSIGNED_FIELDS : binding === 'v2' ? V2_UNSIGNED_FIELDS : [],
      },
      end: { boot, index: next, checkpoint: lastVerified === undefined ? this.#from.checkpoint : lastVerified + 1 },
      replay: this.#replay.toState(),
      lastChunkHash: this.#lastChunkHash,
      lastQuote: this.#lastQuote,
    };
  }

  /**
   * Every record of the segment must be bound by a checked version-2 or -3 nonce, and its boot
   * number by a version-3 one. A segment without any anchored checkpoint is version-1 evidence,
   * one whose anchored nonces are all version 2 is version-2 evidence: accepted as such unless the
   * verifier is strict.
   */
  #binding(end: number): SegmentReport['binding'] {
    const boot = this.#boot;
    if (this.#bound >= end) {
      if (this.#bootSigned) return 'signed';
      if (!this.#context.strict) return 'v2';
      throw new VerifyError('VERIFY_UNSIGNED', `boot ${boot}: checkpoints quoted with the version-2 nonce leave ${V2_UNSIGNED_FIELDS.join(', ')} unsigned (strict)`, {
        check: 'v2-nonce',
        boot,
      });
    }
    const legacy = this.#checkpoints.length > 0 && this.#checkpoints.every((c) => c.anchor === undefined);
    if (legacy && !this.#context.strict) return 'v1';
    throw new VerifyError(
      'VERIFY_UNSIGNED',
      legacy
        ? `boot ${boot}: checkpoints quoted with the version-1 nonce leave ${V1_UNSIGNED_FIELDS.join(', ')} unsigned (strict)`
        : `boot ${boot}: records ${Math.max(0, this.#bound)}..${end - 1} are bound by no checkpoint's nonce in the evidence`,
      { check: legacy ? 'v1-nonce' : 'unsigned-records', boot, index: Math.max(0, this.#bound), expected: `bound to ${end}`, got: `bound to ${this.#bound}` },
    );
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
    // Starting mid-boot without state: the chain head at the start is the first chunk's claim,
    // bound once a nonce anchored there checks out (#settleNonces).
    if (claimedStart) this.#heads.set(next, chunk.prevHash);
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
    const end = chunk.firstIndex + chunk.count;
    this.#matchState(chunk.replay, { check: 'chunk-state', boot: this.#boot, chunk: chunk.firstIndex, index: end - 1 });
  }

  /** A stored replay state (a chunk's, or a segment's claimed start) must equal the replay's. */
  #matchState(state: PcrReplayState, details: VerifyErrorDetails): void {
    const boot = this.#boot;
    const at = this.#replay.recordCount;
    if (state.recordCount !== at) {
      throw new VerifyError('VERIFY_REPLAY', `boot ${boot}: a replay state after ${state.recordCount} records stands where ${at} were replayed`, {
        ...details,
        expected: String(at),
        got: String(state.recordCount),
      });
    }
    for (const b of state.banks) {
      const mode = replayBanks(this.#segment)[b.bank];
      if (mode !== b.mode) {
        throw new VerifyError('VERIFY_REPLAY', `boot ${boot}: a replay state gives ${b.bank} mode ${b.mode}, the boot's is ${mode ?? 'none'}`, { ...details, expected: mode ?? 'none', got: b.mode });
      }
      for (const p of b.pcrs) {
        const got = this.#replayValue(b.bank, p.pcr, details);
        if (!bytesEqual(got, p.value)) {
          throw new VerifyError('VERIFY_REPLAY', `boot ${boot}: a replay state after ${at} records gives ${b.bank} PCR ${p.pcr} = ${toHex(p.value)}, the replay gives ${toHex(got)}`, {
            ...details,
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
    const ak = this.#context.ak;
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
    if (c.pcrBlob !== null && !bytesEqual(c.pcrBlob, encodePcrBlob(c.pcrs))) {
      throw new VerifyError('VERIFY_SIGNATURE', `boot ${boot}: checkpoint ${c.count}: pcrBlob is not the quoted PCR values`, {
        check: 'pcr-blob',
        ...where,
        expected: toHex(encodePcrBlob(c.pcrs)),
        got: toHex(c.pcrBlob),
      });
    }
    const clock = parseQuoteAttest(c.attest).clockInfo;
    const info = this.#segment.info;
    if (clock.resetCount !== info.resetCount) {
      throw new VerifyError('VERIFY_CLOCK_ORDER', `boot ${boot}: checkpoint ${c.count} was quoted at TPM resetCount ${clock.resetCount}, the boot began at ${String(info.resetCount)}`, {
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
    const anchor = c.anchor;
    if (anchor === undefined) this.#checkNonceV1(c);
    else this.#pending.push({ checkpoint: { ...c, anchor }, previous: this.#previous });
    this.#previous = { attest: c.attest, signature: c.signature };
    this.#lastQuote = { boot, attest: c.attest, signature: c.signature, clock };
  }

  /** The version-1 nonce chain, when the boot's previous checkpoint (or its start) is in hand. */
  #checkNonceV1(c: Checkpoint): void {
    const previous = this.#previous;
    if (previous === null) return;
    this.#compareNonce(c, chainedNonceV1(previous, this.#segment.info.kernelBootId), previous === undefined ? "the boot's first version-1 nonce" : 'the version-1 nonce of the previous checkpoint');
  }

  /**
   * Checks the version-2 nonces anchored at or before `position` (a chunk boundary walked): the
   * anchor must be a boundary whose chain head the walk knows. A nonce whose previous checkpoint is
   * not in hand (evidence starting mid-boot without a carried state) cannot be recomputed: it binds
   * nothing, so what only it would bind ends up `VERIFY_UNSIGNED`.
   */
  #settleNonces(position: number): void {
    while (this.#pending[0] !== undefined && this.#pending[0].checkpoint.anchor <= position) {
      const { checkpoint: c, previous } = this.#pending[0];
      this.#pending.shift();
      const head = this.#heads.get(c.anchor);
      if (head === undefined) {
        if (previous === null) continue;
        throw new VerifyError('VERIFY_NONCE_CHAIN', `boot ${this.#boot}: checkpoint ${c.count} is anchored at record ${c.anchor}, not a chunk boundary of the evidence in hand`, {
          check: 'nonce-anchor',
          boot: this.#boot,
          checkpoint: c.count,
          got: String(c.anchor),
        });
      }
      if (previous === null) continue;
      const input = { deviceId: this.#context.deviceId, storeBoot: this.#boot, boot: this.#segment.info, anchor: { count: c.anchor, head }, previous };
      const want = checkpointNonce(input);
      if (bytesEqual(c.nonce, want)) this.#bootSigned = true;
      else if (!bytesEqual(c.nonce, checkpointNonceV2(input))) {
        this.#compareNonce(c, want, `the version-3 nonce over the boot, its number, records 0..${c.anchor - 1} and ${previous === undefined ? "the boot's start" : 'the previous checkpoint'} (nor the version-2 one)`);
      }
      this.#bound = Math.max(this.#bound, c.anchor);
    }
  }

  #compareNonce(c: Checkpoint, want: Uint8Array, what: string): void {
    if (!bytesEqual(c.nonce, want)) {
      throw new VerifyError('VERIFY_NONCE_CHAIN', `boot ${this.#boot}: checkpoint ${c.count} was not quoted with ${what}`, {
        check: 'nonce-chain',
        boot: this.#boot,
        checkpoint: c.count,
        expected: toHex(want),
        got: toHex(c.nonce),
      });
    }
  }
}

/** The `VERIFY_AK` error of a verification asked for without a trusted AK nor trust on first use. */
export function noTrustedAk(): VerifyError {
  return new VerifyError('VERIFY_AK', 'no trusted AK: give the AK to trust (an enrollment record or --ak PEM), or trust on first use explicitly (--trust-on-first-use)', {
    check: 'trusted-ak',
  });
}

/** A trusted AK from a PEM (SPKI) public key, as `tpm2_checkquote -u` takes it; `VERIFY_AK` if it does not parse. */
export function trustedAkFromPem(pem: string | Uint8Array): KeyObject {
  try {
    return createPublicKey(typeof pem === 'string' ? pem : Buffer.from(pem));
  } catch (e) {
    throw new VerifyError('VERIFY_AK', `the trusted AK is not a PEM public key: ${e instanceof Error ? e.message : String(e)}`, { check: 'trusted-ak' }, { cause: e });
  }
}
