/**
 * Building evidence bundles from the store, from a cursor (design.md "Serving"; format in
 * `store/bundle.ts`).
 *
 * What a bundle holds, and why it is stable:
 * - A boot whose checkpoints carry anchors (the version-2 nonce, `store/nonce.ts`) is sent up to
 *   a "cut": the anchor of a checkpoint sent, with every checkpoint sent anchored at or before it.
 *   So every chunk sent is bound by a signature in the same bundle, and every checkpoint sent
 *   covers records sent. Records past the last cut wait for the next checkpoint; those of a
 *   finished boot past its last cut are never sent (nothing signs them; they stay in the store and
 *   in the served log).
 * - A boot with version-1 checkpoints only (a store written before version 2) is sent as before:
 *   of the current boot the chunks wholly covered by a checkpoint, a finished boot whole (the
 *   verifier reports what no signature covers there). A boot without checkpoints is not sent.
 * - Checkpoints are stored with increasing counts, so every checkpoint that covers a sent chunk
 *   existed when it was sent: no checkpoint ever arrives "late", behind the records it covers.
 * - At most `maxBytes` of chunk and checkpoint values, except that a bundle always reaches one cut
 *   if the store has one past the cursor, so memory per request is bounded by the budget plus one
 *   checkpoint interval (Invariant 4). A bundle that reached its budget never changes: the same
 *   cursor gives the same bytes. A bundle that caught up with the store grows with it until it is
 *   full. Boots with nothing to send are not sent as empty segments (an empty segment's metadata
 *   would be bound by nothing); the cursor moves past them.
 */
import { cursorFromText, encodeBundle, encodeCheckpoint, type BundleSegment, type Checkpoint, type EvidenceBundle, type EvidenceCursor, type ImaStore } from '../store/index.js';
import { ServeError } from './errors.js';

/** Parses a cursor's text form (`since`); throws `SERVE_BAD_CURSOR`. */
export function parseCursor(text: string): EvidenceCursor {
  const cursor = cursorFromText(text);
  if (cursor === undefined) throw new ServeError('SERVE_BAD_CURSOR', `cursor '${text.slice(0, 64)}' is not <boot>.<index>.<checkpoint>`, { parameter: 'since' });
  return cursor;
}

/** Limits of one bundle. */
export interface BundleLimits {
  /** Bytes of chunk and checkpoint values per bundle; at least up to one cut is always sent. Default 1 MiB. */
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
    if (part.segment.chunks.length > 0 || part.segment.checkpoints.length > 0) segments.push(part.segment);
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

/**
 * Where a boot's content may end in a bundle, from `from`: every chunk end up to `end` for a
 * version-1 boot, none without checkpoints, else the cuts (see the module comment): an anchor A
 * such that the checkpoints with count <= A (those sent with records up to A) include one
 * anchored at A and none anchored past it. (A checkpoint whose count is past its anchor is not
 * sent with records up to its anchor, so its anchor alone is no cut: the records before it would
 * be bound by no nonce in the bundle.) Anchors never decrease along a boot's checkpoints (the
 * stored count only grows) and counts increase, so one pass finds them.
 */
async function cutsOf(store: ImaStore, from: EvidenceCursor, end: number): Promise<{ readonly isCut: (at: number) => boolean; readonly last: number }> {
  const anchored: Pick<Checkpoint, 'count' | 'anchor'>[] = [];
  for await (const { count, anchor } of store.checkpoints(from.boot, from.checkpoint)) anchored.push({ count, anchor });
  if (anchored.length > 0 && anchored.every((c) => c.anchor === undefined)) return { isCut: (at) => at <= end, last: end };
  const cuts = new Set<number>();
  let covered = 0; // checkpoints [0, covered) have count <= the anchor looked at
  let farthest = -1; // the largest anchor among them
  for (const { anchor } of anchored) {
    if (anchor === undefined) continue;
    for (let c = anchored[covered]; c !== undefined && c.count <= anchor; c = anchored[++covered]) farthest = Math.max(farthest, c.anchor ?? -1);
    if (farthest === anchor) cuts.add(anchor);
  }
  return { isCut: (at) => cuts.has(at), last: [...cuts].reduce((a, b) => Math.max(a, b), from.index) };
}

async function segmentOf(store: ImaStore, from: EvidenceCursor, finished: boolean, budget: number, first: boolean): Promise<SegmentPart> {
  const { boot } = from;
  const info = await store.bootRecord(boot);
  const stored = await store.storedCount(boot);
  const exportEnd = finished ? stored : Math.min(stored, (await store.lastCheckpoint(boot))?.count ?? 0);
  if (from.index > stored) {
    throw new ServeError('SERVE_BAD_CURSOR', `cursor index ${from.index} is past boot ${boot}'s ${stored} stored records`, { boot, index: from.index, parameter: 'since' });
  }
  const cuts = await cutsOf(store, from, exportEnd);
  const chunks: Uint8Array[] = [];
  let sent = { chunks: 0, end: from.index, used: 0 };
  let used = 0;
  let full = false;
  let start: BundleSegment['start'] = null;
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
    const end = chunk.firstIndex + chunk.count;
    if (end > cuts.last) break;
    if (used + stored.value.length > budget && (sent.chunks > 0 || !first)) {
      full = true;
      break;
    }
    chunks.push(stored.value);
    used += stored.value.length;
    if (cuts.isCut(end)) sent = { chunks: chunks.length, end, used };
  }
  chunks.length = sent.chunks;
  const checkpoints: Uint8Array[] = [];
  let nextCheckpoint = from.checkpoint;
  used = sent.used;
  for await (const checkpoint of store.checkpoints(boot, from.checkpoint)) {
    if (checkpoint.count > sent.end) break;
    const value = encodeCheckpoint(checkpoint);
    checkpoints.push(value);
    used += value.length;
    nextCheckpoint = checkpoint.count + 1;
  }
  // The quote the first checkpoint's nonce chains from, for a verifier starting here (store/bundle.ts).
  const before = from.index === 0 || checkpoints.length === 0 ? undefined : await store.lastCheckpoint(boot, from.checkpoint);
  return {
    segment: {
      boot,
      info,
      start: chunks.length === 0 ? null : start,
      chunks,
      checkpoints,
      previous: before === undefined ? null : { attest: before.attest, signature: before.signature },
    },
    next: { boot, index: sent.end, checkpoint: nextCheckpoint },
    bytes: used,
    full,
  };
}
