/**
 * The store's value types other than chunks (`chunk.ts`): store meta, boot metadata, checkpoints
 * and the removal journal, each with its encoder and its shape check. Encoders build maps with a
 * fixed key order, so equal values always give equal bytes (golden vectors in
 * test/store/cbor.test.ts).
 */
import { BANKS, type BankMode, type BankName } from '../ima/index.js';
import { decodeValue, encodeValue } from './cbor.js';
import { FieldReader } from './shape.js';

/**
 * Highest schema version of the on-disk format this code reads and writes: 2 = chunk keys may hold
 * a reference to a value in a segment file (docs/store.md#segment-files); 1 = every chunk value in
 * LevelDB (read as it is).
 */
export const STORE_SCHEMA_VERSION = 2;

/** The store-wide `meta` value. */
export interface StoreMeta {
  /** On-disk schema version ({@link STORE_SCHEMA_VERSION} when written by this code). */
  readonly schema: number;
  /** The attestation key's public area (TPM2B_PUBLIC contents), once the collector created it. */
  readonly akPublic: Uint8Array | null;
  /** Device identity the operator configured (free text, e.g. a serial number), or null. */
  readonly deviceId: string | null;
}

/** Byte order of the kernel's binary lists on this boot (docs/ima-formats.md#byte-order, `ima_canonical_fmt`). */
export type ListEndianness = 'le' | 'be';

/** What the collector knows about a boot when it starts a boot segment. */
export interface BootInfo {
  /** The kernel's `/proc/sys/kernel/random/boot_id` (UUID text). */
  readonly kernelBootId: string;
  /** When the store first saw this boot (ms since the epoch). */
  readonly firstSeen: number;
  /** TPM `resetCount` (TPMS_CLOCK_INFO) at this boot, or null without a TPM. */
  readonly resetCount: number | null;
  /** How the kernel extends each replayed bank on this boot (docs/ima-formats.md#bank-modes, #pcr-replay). */
  readonly bankModes: Readonly<Partial<Record<BankName, BankMode>>>;
  /** Byte order of the kernel's binary lists (chunks are always stored little-endian). */
  readonly endianness: ListEndianness;
  /** Template the kernel's policy uses by default (`ima-ng`...): information for the served log. */
  readonly template: string;
  /** The kernel's `ima_hash` algorithm (file digests in `d-ng`): information. */
  readonly templateHash: string;
}

/** Where an export of a boot segment got to, as acknowledged by the receiver. */
export interface ExportMark {
  /** Records 0..cursor-1 of the boot were exported and acknowledged. */
  readonly cursor: number;
  /** When the acknowledgement was recorded (ms since the epoch). */
  readonly at: number;
}

/**
 * A boot segment's metadata as stored under `boot/<boot>`: its info and export mark. Written when
 * the boot begins and when an export is acknowledged, never per chunk: the stored count and chain
 * head are read from the boot's last chunk. (A per-chunk rewrite of `boot/<n>`, which sorts below
 * every chunk key, made each LevelDB table flush overlap all older tables and turned trivial moves
 * into merging compactions: 3.6x block-layer writes per value byte instead of ~1.5x, bench/store.ts.)
 */
export interface BootRecord extends BootInfo {
  /** Last acknowledged export, or null. */
  readonly exported: ExportMark | null;
}

/** One PCR value a checkpoint's quote attests. */
export interface PcrValue {
  readonly bank: BankName;
  readonly pcr: number;
  readonly value: Uint8Array;
}

/** A verified TPM quote over the replay of stored records 0..count-1 (design.md cycle "match"). */
export interface Checkpoint {
  /** Records 0..count-1 replay to `pcrs`. */
  readonly count: number;
  /** The quoted PCR values, in the order of the quote's selection. */
  readonly pcrs: readonly PcrValue[];
  /** TPMS_ATTEST as the TPM returned it (TPM 2.0 Part 2 §10.12.12). */
  readonly attest: Uint8Array;
  /** TPMT_SIGNATURE over `attest` (Part 2 §11.3.4). */
  readonly signature: Uint8Array;
  /** TPM name of the attestation key (nameAlg ‖ H(public)). */
  readonly akName: Uint8Array;
  /** Qualifying data passed to TPM2_Quote (chained from the previous checkpoint). */
  readonly nonce: Uint8Array;
  /** PCR blob in the Keylime quote format (TPML_PCR_SELECTION ‖ values), if the collector kept it. */
  readonly pcrBlob: Uint8Array | null;
  /**
   * The boot's stored record count when the nonce was computed: the chunk boundary whose chain head
   * the version-2 nonce binds (`nonce.ts`). Absent on checkpoints quoted with the version-1 rule.
   */
  readonly anchor?: number;
}

/** Removal flavours that write to the kernel (design.md "remove"). */
export type RemovalFlavor = 'n' | 'staged';

/**
 * What the kernel's current list showed just before an `n` removal, journaled with the intent so
 * that recovery decides from facts that do not move (design.md "Recovery"): records only ever
 * append at the list's tail, so the head after the write is the record that was at position n,
 * whatever arrived since. A record's identity is the SHA-256 of its bytes in the SHA-1 binary list
 * (`recordIdentity` in collector/recovery.ts).
 */
export interface KernelHeadFacts {
  /** Records in the current list (`runtime_measurements_count`) before the write: a lower bound of it at the write. */
  readonly listed: number;
  /** Identity of the list's first record, stored record T (the one the window checks). */
  readonly first: Uint8Array;
  /** Identity of the record at kernel position n (global T+n), the head once the write is done; null when the list ended at T+n. */
  readonly next: Uint8Array | null;
}

/** A journaled removal whose outcome is not yet written (Invariant 3). */
export interface RemovalIntent {
  readonly flavor: RemovalFlavor;
  /** T, records removed before this removal (must equal the journal's `removed`). */
  readonly removed: number;
  /** Records this removal takes out of the kernel (for `staged`: the staged list's length once read). */
  readonly n: number;
  /** When the intent was written (ms since the epoch). */
  readonly at: number;
  /**
   * Flavour `n`: the kernel's head before the write. Absent from intents written before this
   * field existed (recovery then compares records and replays, see collector/recovery.ts).
   */
  readonly kernelHead?: KernelHeadFacts;
}

/** Progress of a `staged` removal between `A` and `D`, for recovery (design.md "Recovery"). */
export interface StagedListState {
  /** `staged`: `A` was written; `stored`: the staged list is stored and checkpointed, `D` may go. */
  readonly step: 'staged' | 'stored';
  /** Records in the staged list (global indexes removed..removed+count-1). */
  readonly count: number;
}

/** The removal journal of one boot, under `journal/<boot>`. */
export interface Journal {
  /** T: records removed from the kernel so far; kernel position = global index − T (Invariant 6). */
  readonly removed: number;
  /** The intent without an outcome, or null. */
  readonly pending: RemovalIntent | null;
  /** For a pending `staged` removal past `A`: its state; otherwise null. */
  readonly staged: StagedListState | null;
}

/** The journal of a boot nothing was removed from yet. */
export const EMPTY_JOURNAL: Journal = { removed: 0, pending: null, staged: null };

const ENDIANNESS: readonly ListEndianness[] = ['le', 'be'];
/** The bank modes, for shape checks. */
export const BANK_MODES: readonly BankMode[] = ['native', 'padded'];
const FLAVORS: readonly RemovalFlavor[] = ['n', 'staged'];
const STAGED_STEPS: readonly StagedListState['step'][] = ['staged', 'stored'];

/** Encodes the `meta` value. */
export function encodeMeta(meta: StoreMeta): Uint8Array {
  return encodeValue({ schema: meta.schema, akPublic: meta.akPublic, deviceId: meta.deviceId });
}

/**
 * Schema version of a `meta` value, read before anything else so that a newer store is reported
 * as `STORE_VERSION` even when the rest of its shape changed.
 */
export function metaSchemaVersion(bytes: Uint8Array, key: string): number {
  return new FieldReader(decodeValue(bytes, key), key).count('schema');
}

/** Decodes a `meta` value of the current schema. */
export function decodeMeta(bytes: Uint8Array, key: string): StoreMeta {
  const r = new FieldReader(decodeValue(bytes, key), key);
  return {
    schema: r.count('schema'),
    akPublic: r.isNull('akPublic') ? null : r.bytes('akPublic'),
    deviceId: r.isNull('deviceId') ? null : r.text('deviceId'),
  };
}

/** Bank modes as stored: in BANKS order whatever order the caller built them in. */
function bankModesValue(modes: BootInfo['bankModes']): Partial<Record<BankName, BankMode>> {
  const bankModes: Partial<Record<BankName, BankMode>> = {};
  for (const bank of BANKS) {
    const mode = modes[bank];
    if (mode !== undefined) bankModes[bank] = mode;
  }
  return bankModes;
}

/**
 * A boot's info as the store encodes it (field order fixed: part of the boot golden vector), also
 * inside the checkpoint nonce's boot binding (`nonce.ts`).
 */
export function bootInfoValue(boot: BootInfo): Record<string, unknown> {
  return {
    kernelBootId: boot.kernelBootId,
    firstSeen: boot.firstSeen,
    resetCount: boot.resetCount,
    bankModes: bankModesValue(boot.bankModes),
    endianness: boot.endianness,
    template: boot.template,
    templateHash: boot.templateHash,
  };
}

/** Encodes a `boot/<boot>` value. */
export function encodeBootRecord(boot: BootRecord): Uint8Array {
  return encodeValue({
    ...bootInfoValue(boot),
    exported: boot.exported === null ? null : { cursor: boot.exported.cursor, at: boot.exported.at },
  });
}

/** Decodes a `boot/<boot>` value. */
export function decodeBootRecord(bytes: Uint8Array, key: string): BootRecord {
  const r = new FieldReader(decodeValue(bytes, key), key);
  const modes = r.object('bankModes');
  const bankModes: Partial<Record<BankName, BankMode>> = {};
  for (const name of modes.names()) {
    const bank = BANKS.find((b) => b === name);
    if (bank === undefined) throw FieldReader.corrupt(`${modes.where}`, `has unknown bank ${name}`);
    bankModes[bank] = modes.oneOf(bank, BANK_MODES);
  }
  const exported = r.isNull('exported') ? null : r.object('exported');
  return {
    kernelBootId: r.text('kernelBootId'),
    firstSeen: r.count('firstSeen'),
    resetCount: r.isNull('resetCount') ? null : r.count('resetCount'),
    bankModes,
    endianness: r.oneOf('endianness', ENDIANNESS),
    template: r.text('template'),
    templateHash: r.text('templateHash'),
    exported: exported === null ? null : { cursor: exported.count('cursor'), at: exported.count('at') },
  };
}

/**
 * Encodes a `ckpt/<boot>/<count>` value. `anchor` is written only when present, so a version-1
 * checkpoint read back re-encodes to the bytes it was stored as (bundles ship re-encoded values).
 */
export function encodeCheckpoint(c: Checkpoint): Uint8Array {
  return encodeValue({
    count: c.count,
    pcrs: c.pcrs.map((p) => ({ bank: p.bank, pcr: p.pcr, value: p.value })),
    attest: c.attest,
    signature: c.signature,
    akName: c.akName,
    nonce: c.nonce,
    pcrBlob: c.pcrBlob,
    ...(c.anchor === undefined ? {} : { anchor: c.anchor }),
  });
}

/** Decodes a `ckpt/<boot>/<count>` value. */
export function decodeCheckpoint(bytes: Uint8Array, key: string): Checkpoint {
  const r = new FieldReader(decodeValue(bytes, key), key);
  return {
    count: r.count('count'),
    pcrs: r.array('pcrs', (value, where) => {
      const p = new FieldReader(value, where);
      return { bank: p.oneOf('bank', BANKS), pcr: p.count('pcr'), value: p.bytes('value') };
    }),
    attest: r.bytes('attest'),
    signature: r.bytes('signature'),
    akName: r.bytes('akName'),
    nonce: r.bytes('nonce'),
    pcrBlob: r.isNull('pcrBlob') ? null : r.bytes('pcrBlob'),
    ...(r.has('anchor') ? { anchor: r.count('anchor') } : {}),
  };
}

/** Encodes a `journal/<boot>` value. An intent without `kernelHead` encodes as before the field existed. */
export function encodeJournal(j: Journal): Uint8Array {
  const p = j.pending;
  const head = p?.kernelHead;
  const kernelHead = head === undefined ? {} : { kernelHead: { listed: head.listed, first: head.first, next: head.next } };
  return encodeValue({
    removed: j.removed,
    pending: p === null ? null : { flavor: p.flavor, removed: p.removed, n: p.n, at: p.at, ...kernelHead },
    staged: j.staged === null ? null : { step: j.staged.step, count: j.staged.count },
  });
}

function decodeIntent(p: FieldReader): RemovalIntent {
  const intent = { flavor: p.oneOf('flavor', FLAVORS), removed: p.count('removed'), n: p.count('n'), at: p.count('at') };
  if (!p.has('kernelHead')) return intent;
  const h = p.object('kernelHead');
  return { ...intent, kernelHead: { listed: h.count('listed'), first: h.bytes('first', 32), next: h.isNull('next') ? null : h.bytes('next', 32) } };
}

/** Decodes a `journal/<boot>` value (with or without an intent's `kernelHead`). */
export function decodeJournal(bytes: Uint8Array, key: string): Journal {
  const r = new FieldReader(decodeValue(bytes, key), key);
  const p = r.isNull('pending') ? null : r.object('pending');
  const s = r.isNull('staged') ? null : r.object('staged');
  return {
    removed: r.count('removed'),
    pending: p === null ? null : decodeIntent(p),
    staged: s === null ? null : { step: s.oneOf('step', STAGED_STEPS), count: s.count('count') },
  };
}
