/**
 * The evidence bundle: what a device hands over for offline verification (design.md "Serving",
 * docs/api.md#evidence-bundle). One CBOR map, written with the store's pinned encoder, holding boot
 * segments with their chunks and checkpoints exactly as stored, so `imakeep verify` checks the
 * bytes the device committed, not a re-encoding.
 *
 *   { format: 'imakeep-evidence', version: 1, cursor, next, akPublic, deviceId,
 *     segments: [{ boot, info, start, chunks: [chunk value], checkpoints: [checkpoint value] }] }
 *
 * `info` is the boot record (`encodeBootRecord`, export mark cleared so it never changes);
 * `start` is the replay state before the segment's first chunk (the previous chunk's, as stored),
 * null when the segment starts at record 0 or has no chunk. A verifier that carries its own state
 * from an earlier bundle uses that instead (it is trusted; `start` is only claimed).
 *
 * Cursors are text `<boot>.<next chunk's first index>.<next checkpoint count>`: they name chunk
 * boundaries, so re-requesting a cursor after a cut resumes with neither gap nor duplicate.
 *
 * What vouches for what (checked by `src/verify`): checkpoints are signed by the AK; records and
 * the boot's bank modes and list byte order by the replay reaching the quoted PCRs; every chunk
 * byte by the chunk hash chain (the last chunk's by the next bundle's first `prevHash`); the kernel
 * boot id by the boot's first nonce and the TPM resetCount by the quotes' clock info. `deviceId`
 * and the boot's `firstSeen`, `template` and `templateHash` are informational: nothing attests
 * them (the verifier reports them as stated).
 */
import type { PcrReplayState } from '../ima/index.js';
import {
  decodeBootRecord,
  decodeReplayState,
  decodeValue,
  encodeBootRecord,
  encodeValue,
  FieldReader,
  replayStateValue,
  StoreError,
  type BootInfo,
} from '../store/index.js';
import { ServeError } from './errors.js';

/** Value of the bundle's `format` field. */
export const BUNDLE_FORMAT = 'imakeep-evidence';
/** Version of the bundle layout this code writes and reads. */
export const BUNDLE_VERSION = 1;

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

const CURSOR_PATTERN = /^(\d{1,10})\.(\d{1,16})\.(\d{1,16})$/;

/** The cursor's text form. */
export function formatCursor(c: EvidenceCursor): string {
  return `${c.boot}.${c.index}.${c.checkpoint}`;
}

/** Parses a cursor's text form; throws `SERVE_BAD_CURSOR`. */
export function parseCursor(text: string): EvidenceCursor {
  const m = CURSOR_PATTERN.exec(text);
  const [boot, index, checkpoint] = m === null ? [] : [Number(m[1]), Number(m[2]), Number(m[3])];
  if (boot === undefined || index === undefined || checkpoint === undefined || boot > 0xffff_ffff || ![index, checkpoint].every(Number.isSafeInteger)) {
    throw new ServeError('SERVE_BAD_CURSOR', `cursor '${text.slice(0, 64)}' is not <boot>.<index>.<checkpoint>`, { parameter: 'since' });
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
    })),
  });
}

const BYTES = (value: unknown, where: string): Uint8Array => {
  if (!(value instanceof Uint8Array)) throw FieldReader.corrupt(where, 'is not a byte string');
  return value;
};

function cursorField(r: FieldReader, name: string): EvidenceCursor {
  try {
    return parseCursor(r.text(name));
  } catch (e) {
    if (e instanceof ServeError) throw FieldReader.corrupt(`${r.where} .${name}`, 'is not a cursor');
    throw e;
  }
}

/**
 * Decodes a bundle's outer structure (chunks and checkpoints stay bytes: the verifier decodes
 * them one at a time). Throws `StoreError` `STORE_CORRUPT` naming the field at fault.
 */
export function decodeBundle(bytes: Uint8Array): EvidenceBundle {
  const where = 'bundle';
  const r = new FieldReader(decodeValue(bytes, where), where);
  if (r.text('format') !== BUNDLE_FORMAT) throw FieldReader.corrupt(`${where} .format`, `is not '${BUNDLE_FORMAT}'`);
  const version = r.count('version');
  if (version !== BUNDLE_VERSION) {
    throw new StoreError('STORE_VERSION', `bundle version ${version}; this imakeep reads version ${BUNDLE_VERSION}`, {
      key: where,
      foundVersion: version,
      supportedVersion: BUNDLE_VERSION,
    });
  }
  return {
    cursor: cursorField(r, 'cursor'),
    next: cursorField(r, 'next'),
    akPublic: r.isNull('akPublic') ? null : r.bytes('akPublic'),
    deviceId: r.isNull('deviceId') ? null : r.text('deviceId'),
    segments: r.array('segments', (value, at) => {
      const s = new FieldReader(value, at);
      const boot = s.count('boot');
      return {
        boot,
        info: decodeBootRecord(s.bytes('info'), `${at} .info`),
        start: s.isNull('start') ? null : decodeReplayState(s.object('start')),
        chunks: s.array('chunks', BYTES),
        checkpoints: s.array('checkpoints', BYTES),
      };
    }),
  };
}
