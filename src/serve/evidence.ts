/**
 * Building evidence bundles from the store, from a cursor (design.md "Serving"; format in
 * `bundle.ts`).
 *
 * What a bundle holds, and why it is stable:
 * - Of the current boot, only chunks wholly covered by a stored checkpoint: records not yet quoted
 *   are not evidence yet. Checkpoints are stored with increasing counts, so every checkpoint that
 *   covers a sent chunk existed when it was sent: no checkpoint ever arrives "late", behind the
 *   records it covers. A finished boot (a later one exists) is sent whole: nothing will cover its
 *   last records any more, and they are kept all the same (Invariant 1 holds them, not a quote).
 * - At most `maxBytes` of chunk and checkpoint values (at least one chunk), so memory per request
 *   is bounded (Invariant 4). A bundle that reached its budget never changes: the same cursor gives
 *   the same bytes. A bundle that caught up with the store grows with it until it is full.
 */
import { encodeCheckpoint, type ImaStore, type StoredChunk } from '../store/index.js';
import { encodeBundle, type BundleSegment, type EvidenceBundle, type EvidenceCursor } from './bundle.js';
import { ServeError } from './errors.js';

/** Limits of one bundle. */
export interface BundleLimits {
  /** Bytes of chunk and checkpoint values per bundle; at least one chunk is always sent. Default 1 MiB. */
  readonly maxBytes: number;
}

/** Default: 16 chunks of the default 64 KiB (store `DEFAULT_CHUNK_BOUNDS`). */
export const DEFAULT_BUNDLE_LIMITS: BundleLimits = { maxBytes: 1024 * 1024 };

/** A built bundle, its bytes and its next cursor. */
export interface BuiltBundle {
  readonly bundle: EvidenceBundle;
  readonly bytes: Uint8Array;
  /** True when the bundle reached its byte budget (more is ready at `bundle.next`). */
  readonly full: boolean;
}

/**
 * The bundle from `since` (default: the start of the oldest boot in the store). Throws
 * `SERVE_CURSOR_GONE` for a boot retention dropped, `SERVE_BAD_CURSOR` for a cursor past the store
 * or not at a chunk boundary.
 */
export async function buildBundle(store: ImaStore, since?: EvidenceCursor, limits: BundleLimits = DEFAULT_BUNDLE_LIMITS): Promise<BuiltBundle> {
  const boots: number[] = [];
  for await (const { boot } of store.boots()) boots.push(boot);
  const oldest = boots[0];
  const cursor = since ?? { boot: oldest ?? 0, index: 0, checkpoint: 0 };
  if (oldest !== undefined && cursor.boot < oldest) {
    throw new ServeError('SERVE_CURSOR_GONE', `boot ${cursor.boot} was dropped (oldest kept: ${oldest})`, { boot: cursor.boot, parameter: 'since' });
  }
  if (oldest !== undefined && !boots.includes(cursor.boot)) {
    throw new ServeError('SERVE_BAD_CURSOR', `the store has no boot ${cursor.boot}`, { boot: cursor.boot, parameter: 'since' });
  }
  const segments: BundleSegment[] = [];
  let next = cursor;
  let budget = limits.maxBytes;
  let full = false;
  const due = boots.filter((b) => b >= cursor.boot);
  for (const [i, boot] of due.entries()) {
    const from = boot === cursor.boot ? cursor : { boot, index: 0, checkpoint: 0 };
    const later = due[i + 1];
    const finished = later !== undefined;
    const part = await segmentOf(store, from, finished, budget, segments.length === 0);
    segments.push(part.segment);
    budget -= part.bytes;
    next = part.next;
    full = part.full;
    if (full || later === undefined) break;
    next = { boot: later, index: 0, checkpoint: 0 };
  }
  const meta = store.meta;
  const bundle: EvidenceBundle = { cursor, next, akPublic: meta.akPublic, deviceId: meta.deviceId, segments };
  return { bundle, bytes: encodeBundle(bundle), full };
}

interface SegmentPart {
  readonly segment: BundleSegment;
  readonly next: EvidenceCursor;
  readonly bytes: number;
  readonly full: boolean;
}

async function segmentOf(store: ImaStore, from: EvidenceCursor, finished: boolean, budget: number, first: boolean): Promise<SegmentPart> {
  const { boot } = from;
  const info = await store.bootRecord(boot);
  const stored = await store.storedCount(boot);
  const exportEnd = finished ? stored : Math.min(stored, (await store.lastCheckpoint(boot))?.count ?? 0);
  if (from.index > stored) {
    throw new ServeError('SERVE_BAD_CURSOR', `cursor index ${from.index} is past boot ${boot}'s ${stored} stored records`, { boot, index: from.index, parameter: 'since' });
  }
  const chunks: Uint8Array[] = [];
  let end = from.index;
  let used = 0;
  let full = false;
  let start: StoredChunk['chunk']['replay'] | null = null;
  for await (const stored of store.chunks(boot, Math.max(0, from.index - 1))) {
    const { chunk } = stored;
    if (chunk.firstIndex < from.index) {
      // The chunk before the cursor: it must end at the cursor, and its end state is where the
      // segment's replay starts.
      if (chunk.firstIndex + chunk.count !== from.index) {
        throw new ServeError('SERVE_BAD_CURSOR', `cursor index ${from.index} is not a chunk boundary of boot ${boot}`, { boot, index: from.index, parameter: 'since' });
      }
      start = chunk.replay;
      continue;
    }
    if (chunk.firstIndex + chunk.count > exportEnd) break;
    if (used + stored.value.length > budget && (chunks.length > 0 || !first)) {
      full = true;
      break;
    }
    chunks.push(stored.value);
    used += stored.value.length;
    end = chunk.firstIndex + chunk.count;
  }
  const checkpoints: Uint8Array[] = [];
  let nextCheckpoint = from.checkpoint;
  for await (const checkpoint of store.checkpoints(boot, from.checkpoint)) {
    if (checkpoint.count > end) break;
    const value = encodeCheckpoint(checkpoint);
    checkpoints.push(value);
    used += value.length;
    nextCheckpoint = checkpoint.count + 1;
  }
  return {
    segment: { boot, info, start: chunks.length === 0 ? null : start, chunks, checkpoints },
    next: { boot, index: end, checkpoint: nextCheckpoint },
    bytes: used,
    full,
  };
}
