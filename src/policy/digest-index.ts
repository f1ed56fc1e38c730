/**
 * The allowed digests of a policy map (`digests`, `keyrings` or `ima-buf`: name → hex digests),
 * kept compact: a policy of a million digests as a million JavaScript strings in a million-entry
 * `Set` per name cost about 300 MiB and seconds of garbage collection (bench/policy.ts). Here the
 * digests are bytes in one pool, found through one open-addressing hash table keyed on
 * (name, digest bytes): about 45 bytes a digest. A record's digest is looked up as the bytes of
 * its template field, with no hex conversion.
 *
 * The table's hash is seeded per index, so a policy cannot be made to collide on purpose.
 */
import { randomBytes } from 'node:crypto';

/** Lowercase hex digit values by character code, -1 for others. */
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) HEX_VALUE['0123456789abcdef'.charCodeAt(i)] = i;

/** True when `text` is `min..max` lowercase hex digits (the schema's digest pattern), without a RegExp. */
export function isLowerHex(text: string, min: number, max: number): boolean {
  if (text.length < min || text.length > max) return false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128 || (HEX_VALUE[c] as number) < 0) return false;
  }
  return true;
}

/** Name → allowed digests, compact. Built once with {@link DigestIndexBuilder}, then read-only. */
export class DigestIndex {
  readonly #names: ReadonlyMap<string, number>;
  readonly #pool: Uint8Array;
  readonly #entryName: Uint32Array;
  readonly #entryOffset: Uint32Array;
  readonly #entryLength: Uint8Array;
  /** Entry number + 1 per slot, 0 when empty; its length is a power of two. */
  readonly #table: Uint32Array;
  readonly #seed: number;

  /** @internal use {@link DigestIndexBuilder} */
  constructor(parts: { names: ReadonlyMap<string, number>; pool: Uint8Array; entryName: Uint32Array; entryOffset: Uint32Array; entryLength: Uint8Array; table: Uint32Array; seed: number }) {
    this.#names = parts.names;
    this.#pool = parts.pool;
    this.#entryName = parts.entryName;
    this.#entryOffset = parts.entryOffset;
    this.#entryLength = parts.entryLength;
    this.#table = parts.table;
    this.#seed = parts.seed;
  }

  /** Names listed (each with at least one digest). */
  get size(): number {
    return this.#names.size;
  }

  /** Whether `name` is listed. */
  hasName(name: string): boolean {
    return this.#names.has(name);
  }

  /** Whether `digest` is listed for `name`. */
  has(name: string, digest: Uint8Array): boolean {
    const id = this.#names.get(name);
    if (id === undefined) return false;
    const mask = this.#table.length - 1;
    for (let slot = hashOf(this.#seed, id, digest, 0, digest.length) & mask; ; slot = (slot + 1) & mask) {
      const entry = this.#table[slot] as number;
      if (entry === 0) return false;
      if (this.#matches(entry - 1, id, digest)) return true;
    }
  }

  /** The digests listed for `name`, as lowercase hex, in the policy's order (a scan: for short lists such as boot_aggregate). */
  hexDigests(name: string): string[] {
    const id = this.#names.get(name);
    const out: string[] = [];
    if (id === undefined) return out;
    for (let e = 0; e < this.#entryName.length; e++) {
      if (this.#entryName[e] !== id) continue;
      const at = this.#entryOffset[e] as number;
      out.push(Buffer.from(this.#pool.buffer, this.#pool.byteOffset + at, this.#entryLength[e] as number).toString('hex'));
    }
    return out;
  }

  #matches(entry: number, id: number, digest: Uint8Array): boolean {
    if (this.#entryName[entry] !== id || this.#entryLength[entry] !== digest.length) return false;
    const at = this.#entryOffset[entry] as number;
    for (let i = 0; i < digest.length; i++) if (this.#pool[at + i] !== digest[i]) return false;
    return true;
  }
}

/** A seeded 32-bit hash of a name id and digest bytes, four bytes a step (MurmurHash2's mixing). */
function hashOf(seed: number, id: number, bytes: Uint8Array, from: number, length: number): number {
  let h = seed ^ Math.imul(id, 0x9e3779b1) ^ length;
  let i = from;
  for (const end = from + (length & ~3); i < end; i += 4) {
    let k = (bytes[i] as number) | ((bytes[i + 1] as number) << 8) | ((bytes[i + 2] as number) << 16) | ((bytes[i + 3] as number) << 24);
    k = Math.imul(k, 0x5bd1e995);
    k ^= k >>> 24;
    h = Math.imul(h, 0x5bd1e995) ^ Math.imul(k, 0x5bd1e995);
  }
  for (const end = from + length; i < end; i++) h = Math.imul(h ^ (bytes[i] as number), 0x5bd1e995);
  h = Math.imul(h ^ (h >>> 13), 0x5bd1e995);
  return (h ^ (h >>> 15)) >>> 0;
}

/** Growable typed arrays: a new array twice as large, the old contents copied. */
function grown<T extends Uint8Array | Uint32Array>(array: T, make: (length: number) => T, needed: number): T {
  if (needed <= array.length) return array;
  let length = Math.max(array.length * 2, 1024);
  while (length < needed) length *= 2;
  const bigger = make(length);
  bigger.set(array);
  return bigger;
}

/**
 * Builds a {@link DigestIndex} list by list: `begin(name)`, then the list's hex digests (already
 * validated as lowercase hex) as strings or as the ASCII bytes of a policy file, then `build()`.
 */
export class DigestIndexBuilder {
  readonly #names = new Map<string, number>();
  /** Ids of names whose list a later list of the same name replaced (a name repeated in the JSON object: the last wins, as in JSON.parse and Python's json). */
  readonly #replaced = new Set<number>();
  #pool = new Uint8Array(0);
  #entryName = new Uint32Array(0);
  #entryOffset = new Uint32Array(0);
  #entryLength = new Uint8Array(0);
  #entries = 0;
  #used = 0;
  #ids = 0;
  #current = 0;

  /** Starts the list of `name`. */
  begin(name: string): void {
    const earlier = this.#names.get(name);
    if (earlier !== undefined) this.#replaced.add(earlier);
    this.#current = this.#ids++;
    this.#names.set(name, this.#current);
  }

  /** Adds a digest given as hex text (an odd length is never a record's digest: not kept). */
  addHex(hex: string): void {
    if (hex.length % 2 !== 0) return;
    const length = hex.length / 2;
    const at = this.#reserve(length);
    for (let i = 0; i < length; i++) this.#pool[at + i] = ((HEX_VALUE[hex.charCodeAt(2 * i)] as number) << 4) | (HEX_VALUE[hex.charCodeAt(2 * i + 1)] as number);
    this.#commit(at, length);
  }

  /**
   * Adds a digest given as ASCII bytes `bytes[from..to)`, if they are all lowercase hex digits;
   * returns false (adding nothing) if they are not.
   */
  addHexBytes(bytes: Uint8Array, from: number, to: number): boolean {
    const odd = (to - from) % 2 !== 0;
    const length = (to - from) >> 1;
    const at = this.#reserve(length);
    const pool = this.#pool;
    let bad = 0;
    for (let i = 0; i < length; i++) {
      const hi = HEX_VALUE[(bytes[from + 2 * i] as number) & 0x7f] as number;
      const lo = HEX_VALUE[(bytes[from + 2 * i + 1] as number) & 0x7f] as number;
      bad |= hi | lo | (bytes[from + 2 * i] as number) | (bytes[from + 2 * i + 1] as number);
      pool[at + i] = (hi << 4) | lo;
    }
    // A negative table value or a byte ≥ 0x80 sets bit 7 (or the sign) of `bad`.
    if ((bad & ~0x7f) !== 0) return false;
    if (odd) return (HEX_VALUE[(bytes[to - 1] as number) & 0x7f] as number) >= 0 && (bytes[to - 1] as number) < 0x80;
    this.#commit(at, length);
    return true;
  }

  #reserve(length: number): number {
    if (this.#used + length > this.#pool.length) this.#pool = grown(this.#pool, (n) => new Uint8Array(n), this.#used + length);
    return this.#used;
  }

  #commit(at: number, length: number): void {
    const e = this.#entries++;
    if (this.#entries > this.#entryName.length) {
      this.#entryName = grown(this.#entryName, (n) => new Uint32Array(n), this.#entries);
      this.#entryOffset = grown(this.#entryOffset, (n) => new Uint32Array(n), this.#entries);
      this.#entryLength = grown(this.#entryLength, (n) => new Uint8Array(n), this.#entries);
    }
    this.#entryName[e] = this.#current;
    this.#entryOffset[e] = at;
    this.#entryLength[e] = length;
    this.#used = at + length;
  }

  /** The index: the lists, and the hash table over them (a digest listed twice for a name is found once). */
  build(): DigestIndex {
    // Views, not copies: a copy would hold both at the peak.
    const pool = this.#pool.subarray(0, this.#used);
    const entryName = this.#entryName.subarray(0, this.#entries);
    const entryOffset = this.#entryOffset.subarray(0, this.#entries);
    const entryLength = this.#entryLength.subarray(0, this.#entries);
    let slots = 16;
    while (slots < this.#entries * 2) slots *= 2;
    const table = new Uint32Array(slots);
    const mask = slots - 1;
    const seed = randomBytes(4).readUInt32LE(0);
    const same = (a: number, b: number): boolean => {
      if (entryName[a] !== entryName[b] || entryLength[a] !== entryLength[b]) return false;
      const x = entryOffset[a] as number;
      const y = entryOffset[b] as number;
      for (let i = 0; i < (entryLength[a] as number); i++) if (pool[x + i] !== pool[y + i]) return false;
      return true;
    };
    entries: for (let e = 0; e < this.#entries; e++) {
      if (this.#replaced.size > 0 && this.#replaced.has(entryName[e] as number)) continue;
      let slot = hashOf(seed, entryName[e] as number, pool, entryOffset[e] as number, entryLength[e] as number) & mask;
      for (let other = table[slot] as number; other !== 0; slot = (slot + 1) & mask, other = table[slot] as number) {
        if (same(other - 1, e)) continue entries;
      }
      table[slot] = e + 1;
    }
    this.#pool = new Uint8Array(0);
    return new DigestIndex({ names: this.#names, pool, entryName, entryOffset, entryLength, table, seed });
  }
}
