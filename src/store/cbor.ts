/**
 * The one CBOR codec of the store. Every byte the store writes goes through `encodeValue`, so the
 * options below ARE the on-disk format: changing one changes stored bytes, and the golden vectors
 * in test/store/codec.test.ts fail (docs/store.md#cbor-codec, #golden-vectors).
 */
// `cbor-x/encode` is the codec alone (Encoder, whose decode is cbor-x's pure-JS decoder). The
// package's root entry under Node also loads its stream classes and the optional native string
// extractor (`cbor-extract`, with node:stream, node:child_process, node:dgram): 0.3 MiB of the
// daemon's RSS at start (0.18 RssAnon), measured with `imakeep run`'s modules and the daemon's
// flags (bench/results/lean.md, "What `imakeep run` loads").
import { Encoder, type Options } from 'cbor-x/encode';
import { StoreError } from './errors.js';

/**
 * Options cbor-x reads but does not declare in its typings: decode 64-bit unsigned integers
 * (global indexes past 2^32, millisecond times) as numbers rather than bigints; the shape checks
 * then reject anything past `Number.MAX_SAFE_INTEGER`.
 */
interface UndeclaredOptions {
  readonly int64AsNumber: boolean;
}

/**
 * Pinned, never left to a cbor-x default (cbor-x README, "Options": `new Encoder()` turns records on,
 * plain Uint8Arrays are tagged 64 in Node unless told otherwise, maps get fixed-width headers):
 * - `useRecords: false`: plain CBOR maps, readable by any CBOR decoder (a verifier in another
 *   language must read evidence bundles). Costs ~24 B/record against records (measured with cbor-x 1.6),
 *   irrelevant here because records travel inside one byte string per chunk.
 * - `tagUint8Array: false`: a Uint8Array and a Buffer with the same bytes encode the same, so a
 *   value read back (LevelDB hands out Buffers) re-encodes to identical bytes.
 * - `variableMapSize: true`: shortest map headers (`a2`, not `b9 0002`).
 * - `mapsAsObjects: true`: maps decode to plain objects, which the shape checks narrow.
 * - `largeBigIntToFloat: false`, `useFloat32: 0`, `alwaysUseFloat: false`: integers stay integers,
 *   floats are never narrowed (we store none; pinned so that a stray one is exact).
 * - `structuredClone`, `pack`, `bundleStrings`, `sequential`, `useTimestamp32`, `useToJSON`,
 *   `encodeUndefinedAsNil`: off, i.e. standard CBOR (RFC 8949) only.
 * - `copyBuffers: false`: decoded byte strings are VIEWS into the value bytes (no copy per
 *   field). Keeping one keeps its whole value alive, at most one chunk (~64 KiB): callers that hold a
 *   field for long (a checkpoint's attestation kept for hours) copy it with `.slice()`.
 */
const OPTIONS: Options & UndeclaredOptions = {
  useRecords: false,
  tagUint8Array: false,
  variableMapSize: true,
  mapsAsObjects: true,
  largeBigIntToFloat: false,
  useFloat32: 0,
  alwaysUseFloat: false,
  structuredClone: false,
  pack: false,
  bundleStrings: false,
  sequential: false,
  useTimestamp32: false,
  useToJSON: false,
  encodeUndefinedAsNil: false,
  copyBuffers: false,
  int64AsNumber: true,
};

/**
 * Largest value the store accepts to decode. A sealed chunk is ~64 KiB (`chunk.ts`); 16 MiB leaves
 * room for any chunk bound a device would configure. Since every CBOR item takes at least one byte,
 * bounding the input bounds the number of items cbor-x can allocate (its decoder also checks array
 * headers against the bytes left).
 */
export const MAX_VALUE_BYTES = 16 * 1024 * 1024;

let codec: Encoder | undefined;

/** Built on first use, not on import (no side effects on import). */
function theCodec(): Encoder {
  codec ??= new Encoder(OPTIONS);
  return codec;
}

/**
 * cbor-x writes integers past 2^32-1 as float64 (`fb…`); a verifier in another language must see
 * the integers they are (major type 0, `1b` + u64, RFC 8949 §3.1). As bigints cbor-x writes them so.
 * Walks maps and arrays only; byte strings (the bulk of a chunk) are passed through.
 */
function withWideIntegers(value: unknown): unknown {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0xffff_ffff ? BigInt(value) : value;
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return value;
  if (Array.isArray(value)) return value.map(withWideIntegers);
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withWideIntegers(v)]));
}

/** Encodes one stored value (plain objects, arrays, strings, safe integers, byte strings, null). */
export function encodeValue(value: unknown): Uint8Array {
  return theCodec().encode(withWideIntegers(value));
}

/**
 * Decodes the value stored under `key` (printable form, for the error). Throws `STORE_CORRUPT` on
 * oversized, truncated, trailing or malformed bytes; the result is `unknown` until a shape check
 * (`values.ts`) narrows it.
 */
export function decodeValue(bytes: Uint8Array, key: string): unknown {
  if (bytes.length > MAX_VALUE_BYTES) {
    throw new StoreError('STORE_CORRUPT', `${key}: value of ${bytes.length} bytes exceeds ${MAX_VALUE_BYTES}`, { key });
  }
  try {
    return theCodec().decode(bytes) as unknown;
  } catch (cause) {
    const what = cause instanceof Error ? cause.message : String(cause);
    throw new StoreError('STORE_CORRUPT', `${key}: undecodable CBOR (${what})`, { key }, { cause });
  }
}
