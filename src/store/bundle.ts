/**
 * The evidence bundle: what a device hands over for offline verification (design.md "Serving",
 * docs/api.md#evidence-bundle). One CBOR map, written with the store's pinned encoder, holding boot
 * segments with their chunks and checkpoints exactly as stored, so `imakeep verify` checks the
 * bytes the device committed, not a re-encoding. Defined here, below `serve` (which builds
 * bundles) and `verify` (which checks them).
 *
 *   { format: 'imakeep-evidence', version: 2, cursor, next, akPublic, deviceId,
 *     segments: [{ boot, info, start, chunks: [chunk value], checkpoints: [checkpoint value], previous? }] }
 *
 * `info` is the boot record (`encodeBootRecord`, export mark cleared so it never changes);
 * `start` is the replay state before the segment's first chunk (the previous chunk's, as stored),
 * null when the segment starts at record 0 or has no chunk. A verifier that carries its own state
 * from an earlier bundle checks it against that state (only a verifier starting mid-boot without
 * one takes it as claimed).
 *
 * `previous` (`{ attest, signature }`, present only on a segment that starts mid-boot after one of
 * its boot's checkpoints) is the quote of the boot's checkpoint just before the segment's first:
 * the input the first checkpoint's nonce chains from (`nonce.ts`). With it, a verifier starting
 * mid-boot without state recomputes that nonce, so one checkpoint binds the segment; without it
 * (bundles written before the field), the first nonce binds nothing and only a second checkpoint
 * does (docs/store.md#starting-mid-boot). Older readers ignore the field.
 *
 * Cursors are text `<boot>.<next chunk's first index>.<next checkpoint count>`: they name chunk
 * boundaries, so re-requesting a cursor after a cut resumes with neither gap nor duplicate.
 *
 * What vouches for what (checked by `src/verify`): checkpoints are signed by the AK; every
 * checkpoint's version-2 nonce (`nonce.ts`) binds the boot metadata and `deviceId`, the chunk
 * chain up to its anchor (so every chunk byte) and the previous checkpoint; a bundle's chunks end
 * at an anchor of a checkpoint it carries (`serve/evidence.ts`), so no chunk byte is outside a
 * signature; the records and bank modes are also checked by the replay reaching the quoted PCRs,
 * the TPM resetCount by the quotes' clock info, `pcrBlob` against the signed PCR values, the AK
 * against the verifier's trusted one, cursors against the content. Version 1 (written before the
 * version-2 nonce) has the same layout; its checkpoints carry no anchor.
 */
import type { PcrReplayState } from '../ima/index.js';
import { decodeValue, encodeValue } from './cbor.js';
import { decodeReplayState, replayStateValue } from './chunk.js';
import { StoreError } from './errors.js';
import { FieldReader } from './shape.js';
import type { QuoteLink } from './nonce.js';
import { decodeBootRecord, encodeBootRecord, type BootInfo } from './values.js';

/** Value of the bundle's `format` field. */
export const BUNDLE_FORMAT = 'imakeep-evidence';
/** Version of the bundle this code writes; it reads 1 and 2 (same layout, see the module comment). */
export const BUNDLE_VERSION = 2;

/** Where an export got to: the next chunk and the next checkpoint to send. */
export interface EvidenceCursor {
  /** Store boot number. */
  readonly boot: number;
  /** Global index of the next chunk's first record (a chunk boundary). */
  readonly index: number;
  /** Smallest checkpoint count not yet sent. */
  readonly checkpoint: number;
}

/** One boot's part of a bundle. */
export interface BundleSegment {
  readonly boot: number;
  readonly info: BootInfo;
  /** Claimed replay state before the first chunk (see the module comment), or null. */
  readonly start: PcrReplayState | null;
  /** Chunk values exactly as stored, consecutive. */
  readonly chunks: readonly Uint8Array[];
  /** Checkpoint values exactly as stored, by increasing count. */
  readonly checkpoints: readonly Uint8Array[];
  /** The quote of the boot's checkpoint before the first of `checkpoints` (see the module comment), or null. */
  readonly previous: QuoteLink | null;
}

/** A decoded bundle. */
export interface EvidenceBundle {
  readonly cursor: EvidenceCursor;
  readonly next: EvidenceCursor;
  /** The AK's `TPM2B_PUBLIC`, or null if the collector never created one. */
  readonly akPublic: Uint8Array | null;
  readonly deviceId: string | null;
  readonly segments: readonly BundleSegment[];
}

/** A bundle as read: with the version it was written as. */
export interface DecodedBundle extends EvidenceBundle {
  readonly version: number;
}

const CURSOR_PATTERN = /^(\d{1,10})\.(\d{1,16})\.(\d{1,16})$/;

/** The cursor's text form. */
export function formatCursor(c: EvidenceCursor): string {
  return `${c.boot}.${c.index}.${c.checkpoint}`;
}

/** Parses a cursor's text form; undefined if it is not `<boot>.<index>.<checkpoint>`. */
export function cursorFromText(text: string): EvidenceCursor | undefined {
  const m = CURSOR_PATTERN.exec(text);
  const [boot, index, checkpoint] = m === null ? [] : [Number(m[1]), Number(m[2]), Number(m[3])];
  if (boot === undefined || index === undefined || checkpoint === undefined || boot > 0xffff_ffff || ![index, checkpoint].every(Number.isSafeInteger)) {
    return undefined;
  }
  return { boot, index, checkpoint };
}

/** Encodes a bundle (deterministic: equal bundles give equal bytes). */
export function encodeBundle(bundle: EvidenceBundle): Uint8Array {
  return encodeValue({
    format: BUNDLE_FORMAT,
    version: BUNDLE_VERSION,
    cursor: formatCursor(bundle.cursor),
    next: formatCursor(bundle.next),
    akPublic: bundle.akPublic,
    deviceId: bundle.deviceId,
    segments: bundle.segments.map((s) => ({
      boot: s.boot,
      info: encodeBootRecord({ ...s.info, exported: null }),
      start: s.start === null ? null : replayStateValue(s.start),
      chunks: s.chunks,
      checkpoints: s.checkpoints,
      ...(s.previous === null ? {} : { previous: { attest: s.previous.attest, signature: s.previous.signature } }),
    })),
  });
}

const BYTES = (value: unknown, where: string): Uint8Array => {
  if (!(value instanceof Uint8Array)) throw FieldReader.corrupt(where, 'is not a byte string');
  return value;
};

function quoteLinkField(r: FieldReader, name: string): QuoteLink {
  const link = r.object(name);
  return { attest: link.bytes('attest'), signature: link.bytes('signature') };
}

function cursorField(r: FieldReader, name: string): EvidenceCursor {
  const cursor = cursorFromText(r.text(name));
  if (cursor === undefined) throw FieldReader.corrupt(`${r.where} .${name}`, 'is not a cursor');
  return cursor;
}

/**
 * Decodes a bundle's outer structure (chunks and checkpoints stay bytes: the verifier decodes
 * them one at a time). Throws `StoreError` `STORE_CORRUPT` naming the field at fault.
 */
export function decodeBundle(bytes: Uint8Array): DecodedBundle {
  const where = 'bundle';
  const r = new FieldReader(decodeValue(bytes, where), where);
  if (r.text('format') !== BUNDLE_FORMAT) throw FieldReader.corrupt(`${where} .format`, `is not '${BUNDLE_FORMAT}'`);
  const version = r.count('version');
  if (version < 1 || version > BUNDLE_VERSION) {
    throw new StoreError('STORE_VERSION', `bundle version ${version}; this imakeep reads versions 1 to ${BUNDLE_VERSION}`, {
      key: where,
      foundVersion: version,
      supportedVersion: BUNDLE_VERSION,
    });
  }
  return {
    version,
    cursor: cursorField(r, 'cursor'),
    next: cursorField(r, 'next'),
    akPublic: r.isNull('akPublic') ? null : r.bytes('akPublic'),
    deviceId: r.isNull('deviceId') ? null : r.text('deviceId'),
    segments: r.array('segments', (value, at) => {
      const s = new FieldReader(value, at);
      const boot = s.count('boot');
      const info = decodeBootRecord(s.bytes('info'), `${at} .info`);
      if (info.exported !== null) throw FieldReader.corrupt(`${at} .info`, 'has an export mark (bundles carry none)');
      return {
        boot,
        info,
        start: s.isNull('start') ? null : decodeReplayState(s.object('start')),
        chunks: s.array('chunks', BYTES),
        checkpoints: s.array('checkpoints', BYTES),
        previous: s.has('previous') ? quoteLinkField(s, 'previous') : null,
      };
    }),
  };
}
