/**
 * The rule that chains a boot's checkpoints and binds the stored evidence to them (design.md "The
 * cycle", quote step): the store defines what a checkpoint is, so it defines the qualifying data
 * each checkpoint's quote carries. The collector quotes with it; a verifier recomputes it from the
 * stored checkpoints, chunks and boot metadata (docs/store.md#nonce-chain).
 *
 * Version 3 (what the collector quotes with): the nonce of a checkpoint quote is
 *
 *   SHA-256(label₃ ‖ SHA-256(boot binding) ‖ u32be(store boot) ‖ u64be(anchor) ‖ chain head at anchor ‖ previous attest ‖ previous signature)
 *
 * - the boot binding ({@link bootBinding}): every field of the boot's metadata a verifier reads
 *   (device id, kernel boot id, first seen, resetCount, bank modes, byte order, template, template
 *   hash), one canonical CBOR map;
 * - the store boot: the store's number of the boot segment (`boot/<n>`), which bundles and cursors
 *   carry: a segment cannot be renumbered;
 * - the anchor: the boot's stored record count when the nonce was computed, always a chunk
 *   boundary, and the SHA-256 of the chunk that ends there (32 zero bytes at 0): through the chunk
 *   hash chain (`chunk.ts`) it binds every byte of every chunk up to the anchor, including what
 *   IMA's template hash does not cover (template names, violation records' data;
 *   docs/ima-formats.md#template-digest). The quote comes after the anchor, so the records it matches (count ≥ anchor) were all
 *   logged before it;
 * - the previous checkpoint's exact TPMS_ATTEST and TPMT_SIGNATURE bytes (nothing for a boot's
 *   first checkpoint): a checkpoint cannot be dropped from or moved within the chain;
 * - label₃ = `imakeep/checkpoint-nonce/v3` NUL.
 *
 * Version 2 (stores written before version 3; read, never written): the same without the store
 * boot, label₂ = `imakeep/checkpoint-nonce/v2` NUL. A checkpoint's stored value does not say
 * which of the two it was quoted with (both carry an anchor): a verifier tries version 3, then 2.
 *
 * Version 1 (stores written before version 2; read, never written): SHA-256(label₁ ‖ kernel boot
 * id) for a boot's first checkpoint, SHA-256(label₁ ‖ previous attest ‖ previous signature) after;
 * it left the rest of the boot metadata and the chunks' bytes outside every signature.
 *
 * All are 32 bytes: the most TPM2_Quote takes with a SHA-256 AK.
 */
import { bankHash, concatBytes } from '../ima/index.js';
import { encodeValue } from './cbor.js';
import { CHUNK_HASH_SIZE } from './chunk.js';
import { StoreError } from './errors.js';
import type { ImaStore } from './store.js';
import { bootInfoValue, type BootInfo } from './values.js';

/** A checkpoint's quote, as the nonce chain needs it. */
export interface QuoteLink {
  readonly attest: Uint8Array;
  readonly signature: Uint8Array;
}

/** Where a version-2 or -3 nonce binds the chunk chain: records 0..count-1 and the chunk ending there. */
export interface ChainAnchor {
  /** The boot's stored record count (a chunk boundary). */
  readonly count: number;
  /** SHA-256 of the chunk ending at `count`; null at 0. */
  readonly head: Uint8Array | null;
}

/** Everything a version-3 nonce binds (a version-2 nonce: all but `storeBoot`). */
export interface NonceInput {
  /** The store's device id (`StoreMeta.deviceId`). */
  readonly deviceId: string | null;
  /** The store's number of the boot segment. */
  readonly storeBoot: number;
  readonly boot: BootInfo;
  readonly anchor: ChainAnchor;
  /** The boot's previous checkpoint; undefined for its first. */
  readonly previous: QuoteLink | undefined;
}

const text = new TextEncoder();

/**
 * OpenSSL's SHA-256 (`node:crypto` one-shot, src/ima/hash.ts), not @noble/hashes: a nonce is
 * made once a cycle, too seldom for V8 to compile noble's JavaScript, which then ran cold:
 * ~0.2-0.5 ms a call in a `--cpu-prof` of the ingest bench (bench/results/lean.md "Session 3").
 */
function sha256(data: Uint8Array): Uint8Array {
  return bankHash('sha256', data);
}
const NONCE_LABEL_V1 = text.encode('imakeep/checkpoint-nonce/v1\0');
const NONCE_LABEL_V2 = text.encode('imakeep/checkpoint-nonce/v2\0');
const NONCE_LABEL_V3 = text.encode('imakeep/checkpoint-nonce/v3\0');

/** The version-1 rule (see the module comment), for checkpoints stored before version 2. */
export function chainedNonceV1(previous: QuoteLink | undefined, kernelBootId: string): Uint8Array {
  const tail = previous === undefined ? [text.encode(kernelBootId)] : [previous.attest, previous.signature];
  return sha256(concatBytes([NONCE_LABEL_V1, ...tail]));
}

/**
 * The boot binding's bytes: a CBOR map with a fixed key order (golden vector in
 * test/store/nonce.test.ts), bank modes in BANKS order.
 */
export function bootBinding(deviceId: string | null, boot: BootInfo): Uint8Array {
  return encodeValue({ deviceId, ...bootInfoValue(boot) });
}

/** Versions 2 and 3 (see the module comment): `storeBoot` is the 4 bytes only version 3 has. */
function anchoredNonce(label: Uint8Array, storeBoot: Uint8Array, input: Omit<NonceInput, 'storeBoot'>): Uint8Array {
  const count = new Uint8Array(8);
  new DataView(count.buffer).setBigUint64(0, BigInt(input.anchor.count));
  const previous = input.previous === undefined ? [] : [input.previous.attest, input.previous.signature];
  return sha256(concatBytes([label, sha256(bootBinding(input.deviceId, input.boot)), storeBoot, count, input.anchor.head ?? new Uint8Array(CHUNK_HASH_SIZE), ...previous]));
}

/** The version-3 rule (see the module comment): what the collector quotes with. */
export function checkpointNonce(input: NonceInput): Uint8Array {
  const storeBoot = new Uint8Array(4);
  new DataView(storeBoot.buffer).setUint32(0, input.storeBoot);
  return anchoredNonce(NONCE_LABEL_V3, storeBoot, input);
}

/** The version-2 rule (see the module comment), for checkpoints stored before version 3. */
export function checkpointNonceV2(input: Omit<NonceInput, 'storeBoot'>): Uint8Array {
  return anchoredNonce(NONCE_LABEL_V2, new Uint8Array(0), input);
}

/**
 * The nonce of `boot`'s next checkpoint quote, from what the store holds now (its device id, the
 * boot's metadata and chain head), and the anchor to store with the checkpoint. Commit the open
 * chunk first: records not in a chunk are not bound by this quote.
 */
export async function nextCheckpointNonce(store: ImaStore, boot: number, previous: QuoteLink | undefined): Promise<{ nonce: Uint8Array; anchor: number }> {
  const last = await store.lastChunk(boot);
  const anchor: ChainAnchor = last === undefined ? { count: 0, head: null } : { count: last.chunk.firstIndex + last.chunk.count, head: last.hash };
  const nonce = checkpointNonce({ deviceId: store.meta.deviceId, storeBoot: boot, boot: await store.bootRecord(boot), anchor, previous });
  return { nonce, anchor: anchor.count };
}

/**
 * Makes `deviceId` the store's device id (`StoreMeta.deviceId`), which every version-2 and -3 nonce binds
 * and an enrollment names (`imakeep verify --enrollment` holds a bundle to it). Set once: on a
 * store without any checkpoint, since checkpoints already quoted bound the id the store had then
 * and would no longer verify. Throws `StoreError` `STORE_DEVICE_ID` when the store holds another
 * id, or none but checkpoints quoted without one.
 */
export async function adoptDeviceId(store: ImaStore, deviceId: string): Promise<void> {
  const current = store.meta.deviceId;
  if (current === deviceId) return;
  if (current !== null) {
    throw new StoreError('STORE_DEVICE_ID', `the store belongs to device '${current}', not '${deviceId}'`, { key: 'meta' });
  }
  for await (const { boot } of store.boots()) {
    if ((await store.lastCheckpoint(boot)) !== undefined) {
      throw new StoreError('STORE_DEVICE_ID', `boot ${boot} was checkpointed without a device id: its nonces would no longer verify under '${deviceId}'`, { boot, key: 'meta' });
    }
  }
  await store.updateMeta({ deviceId });
}
