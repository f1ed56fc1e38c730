/**
 * LevelDB keys of the store schema (design.md "Store schema"). LevelDB orders keys bytewise, so
 * every number is fixed-width big-endian: a boot's chunks iterate in index order and boots in the
 * order they were seen.
 *
 *   meta                                     'meta'
 *   boot/<boot u32>                          'boot/' ‖ u32be
 *   chunk/<boot u32>/<firstIndex u64>        'chunk/' ‖ u32be ‖ '/' ‖ u64be
 *   ckpt/<boot u32>/<count u64>              'ckpt/' ‖ u32be ‖ '/' ‖ u64be
 *   journal/<boot u32>                       'journal/' ‖ u32be
 *
 * The boot is the store's own sequence number (0, 1, 2...), not the kernel's boot_id UUID, which
 * is kept in the boot metadata instead: UUIDs are random, so keyed by them boots would iterate in
 * no useful order, "the current boot" would need a scan, and retention could not drop "everything
 * before" as a range; the TPM resetCount is no key either (no TPM, or a cleared TPM, repeats it).
 * Indexes are u64 because a global index counts every record since boot; JS numbers bound them to
 * 2^53, far past any boot.
 */

/** A half-open key range `[gte, lt)` in LevelDB's bytewise order. */
export interface KeyRange {
  readonly gte: Uint8Array;
  readonly lt: Uint8Array;
}

const ASCII = new TextEncoder();

/** The key of the store's single `meta` value. */
export const META_KEY: Uint8Array = ASCII.encode('meta');

const BOOT = ASCII.encode('boot/');
const CHUNK = ASCII.encode('chunk/');
const CKPT = ASCII.encode('ckpt/');
const JOURNAL = ASCII.encode('journal/');
const SLASH = 0x2f;

/** Largest boot sequence number (u32). */
export const MAX_BOOT = 0xffff_ffff;

function checkBoot(boot: number): void {
  if (!Number.isInteger(boot) || boot < 0 || boot > MAX_BOOT) throw new RangeError(`boot ${boot} is not a u32`);
}

function checkIndex(index: number): void {
  if (!Number.isSafeInteger(index) || index < 0) throw new RangeError(`index ${index} is not a non-negative safe integer`);
}

function withBoot(prefix: Uint8Array, boot: number, extra: number): { key: Uint8Array; view: DataView } {
  checkBoot(boot);
  const key = new Uint8Array(prefix.length + 4 + extra);
  key.set(prefix);
  const view = new DataView(key.buffer);
  view.setUint32(prefix.length, boot);
  return { key, view };
}

function withBootAndIndex(prefix: Uint8Array, boot: number, index: number): Uint8Array {
  checkIndex(index);
  const { key, view } = withBoot(prefix, boot, 9);
  const at = prefix.length + 4;
  key[at] = SLASH;
  view.setBigUint64(at + 1, BigInt(index));
  return key;
}

/** `boot/<boot>`: the boot segment's metadata. */
export function bootKey(boot: number): Uint8Array {
  return withBoot(BOOT, boot, 0).key;
}

/** `chunk/<boot>/<firstIndex>`: the chunk whose first record has global index `firstIndex`. */
export function chunkKey(boot: number, firstIndex: number): Uint8Array {
  return withBootAndIndex(CHUNK, boot, firstIndex);
}

/** `ckpt/<boot>/<count>`: the checkpoint covering records 0..count-1. */
export function checkpointKey(boot: number, count: number): Uint8Array {
  return withBootAndIndex(CKPT, boot, count);
}

/** `journal/<boot>`: the removal journal of a boot. */
export function journalKey(boot: number): Uint8Array {
  return withBoot(JOURNAL, boot, 0).key;
}

/** Every key starting with `prefix` (prefixes here never end in 0xff, so incrementing the last byte bounds them). */
function prefixRange(prefix: Uint8Array): KeyRange {
  const lt = prefix.slice();
  lt[lt.length - 1] = (lt[lt.length - 1] ?? 0) + 1;
  return { gte: prefix, lt };
}

/** All `boot/*` keys, in boot order. */
export function bootRange(): KeyRange {
  return prefixRange(BOOT);
}

/** All chunks of one boot, in index order. */
export function chunkRange(boot: number): KeyRange {
  return prefixRange(withBoot(CHUNK, boot, 1).key.fill(SLASH, CHUNK.length + 4));
}

/** All checkpoints of one boot, in index order. */
export function checkpointRange(boot: number): KeyRange {
  return prefixRange(withBoot(CKPT, boot, 1).key.fill(SLASH, CKPT.length + 4));
}

/** Boot number of a `boot/<boot>` key. */
export function bootOfKey(key: Uint8Array): number {
  return new DataView(key.buffer, key.byteOffset, key.byteLength).getUint32(BOOT.length);
}

/** Trailing u64 index of a `chunk/…/<index>` or `ckpt/…/<index>` key. */
export function indexOfKey(key: Uint8Array): number {
  return Number(new DataView(key.buffer, key.byteOffset, key.byteLength).getBigUint64(key.length - 8));
}

/** Printable form for errors and logs: ASCII kept, binary numbers in decimal (`chunk/3/1024`). */
export function formatKey(key: Uint8Array): string {
  const text = new TextDecoder().decode(key.subarray(0, key.indexOf(SLASH) + 1));
  if (text === '') return new TextDecoder().decode(key);
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
  const boot = view.getUint32(text.length);
  return key.length > text.length + 4 ? `${text}${boot}/${view.getBigUint64(text.length + 5)}` : `${text}${boot}`;
}
