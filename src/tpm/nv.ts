/**
 * NV indices: TPM2_NV_ReadPublic and TPM2_NV_Read as data, the Name of an index, and `readNv`,
 * which reads a whole index in chunks of the TPM's NV buffer size (TPM_PT_NV_BUFFER_MAX).
 */
import { createHash } from 'node:crypto';
import { GetCapability } from './commands.js';
import { TPM_CAP, TPM_CC, TPM_PT } from './constants.js';
import { TpmProtocolError } from './errors.js';
import { TpmReader, TpmWriter } from './marshal.js';
import type { TpmCommand } from './command.js';
import { hashOfAlg } from './session.js';
import type { Tpm } from './tpm.js';

/** First handle of the NV index range (Part 2 §7.2, TPM_HT_NV_INDEX = 0x01). */
export const NV_INDEX_FIRST = 0x01000000;

/** A parsed `TPMS_NV_PUBLIC` (Part 2 §13.5). */
export interface NvPublic {
  readonly nvIndex: number;
  readonly nameAlg: number;
  /** TPMA_NV bits (Part 2 §13.4). */
  readonly attributes: number;
  readonly authPolicy: Uint8Array;
  readonly dataSize: number;
}

/** TPMA_NV_WRITTEN (Part 2 §13.4): the index has been written; reading an unwritten one fails. */
export const TPMA_NV_WRITTEN = 1 << 29;

/** Writes a `TPMS_NV_PUBLIC` (Part 2 §13.5). */
export function writeNvPublic(w: TpmWriter, pub: NvPublic): void {
  w.u32(pub.nvIndex).u16(pub.nameAlg).u32(pub.attributes).tpm2b(pub.authPolicy).u16(pub.dataSize);
}

/** The Name of an NV index: nameAlg ‖ H_nameAlg(TPMS_NV_PUBLIC) (Part 1 §16). */
export function nvName(pub: NvPublic): Uint8Array {
  const w = new TpmWriter();
  writeNvPublic(w, pub);
  const alg = Buffer.alloc(2);
  alg.writeUInt16BE(pub.nameAlg);
  return new Uint8Array(Buffer.concat([alg, createHash(hashOfAlg(pub.nameAlg).name).update(w.finish()).digest()]));
}

/** Input of TPM2_NV_ReadPublic. */
export interface NvReadPublicRequest {
  readonly nvIndex: number;
}

/** Output of TPM2_NV_ReadPublic. */
export interface NvReadPublicResponse {
  readonly nvPublic: NvPublic;
  readonly name: Uint8Array;
}

/** TPM2_NV_ReadPublic: Part 3 §31.6. */
export const NvReadPublic: TpmCommand<NvReadPublicRequest, NvReadPublicResponse> = {
  name: 'TPM2_NV_ReadPublic',
  code: TPM_CC.NV_ReadPublic,
  handles: (req) => [req.nvIndex],
  authorized: 0,
  responseHandles: 0,
  writeParams: () => undefined,
  readParams(r) {
    const inner = r.sub(r.u16('TPM2B_NV_PUBLIC.size'), 'TPMS_NV_PUBLIC');
    const nvPublic: NvPublic = {
      nvIndex: inner.u32('nvIndex'),
      nameAlg: inner.u16('nameAlg'),
      attributes: inner.u32('attributes'),
      authPolicy: inner.tpm2b('authPolicy').slice(),
      dataSize: inner.u16('dataSize'),
    };
    inner.expectEnd('TPMS_NV_PUBLIC');
    return { nvPublic, name: r.tpm2b('nvName').slice() };
  },
};

/** Input of TPM2_NV_Read. */
export interface NvReadRequest {
  readonly nvIndex: number;
  /** Bytes to read: at most the TPM's TPM_PT_NV_BUFFER_MAX. */
  readonly size: number;
  readonly offset: number;
}

/**
 * TPM2_NV_Read: Part 3 §31.13, authorized by the index itself with its (empty) auth value, as the
 * TCG EK Credential Profile's certificate indices allow (TPMA_NV_AUTHREAD).
 */
export const NvRead: TpmCommand<NvReadRequest, Uint8Array> = {
  name: 'TPM2_NV_Read',
  code: TPM_CC.NV_Read,
  handles: (req) => [req.nvIndex, req.nvIndex],
  authorized: 1,
  responseHandles: 0,
  writeParams: (w, req) => void w.u16(req.size).u16(req.offset),
  readParams: (r) => r.tpm2b('TPM2B_MAX_NV_BUFFER').slice(),
};

/** The TPM's largest NV_Read chunk (GetCapability TPM_PT_NV_BUFFER_MAX). */
export async function nvBufferMax(tpm: Tpm): Promise<number> {
  const res = await tpm.execute(GetCapability, { capability: TPM_CAP.TPM_PROPERTIES, property: TPM_PT.NV_BUFFER_MAX, propertyCount: 1 });
  const value = res.capability === 'properties' ? res.properties.get(TPM_PT.NV_BUFFER_MAX) : undefined;
  if (value === undefined || value === 0) throw new TpmProtocolError('GetCapability did not report TPM_PT_NV_BUFFER_MAX');
  return value;
}

/** The NV indices defined in [first, last] (GetCapability TPM_CAP_HANDLES), ascending. */
export async function nvIndices(tpm: Tpm, first: number, last: number): Promise<number[]> {
  const out: number[] = [];
  for (let from = first; ; ) {
    const res = await tpm.execute(GetCapability, { capability: TPM_CAP.HANDLES, property: from, propertyCount: 64 });
    if (res.capability !== 'handles') throw new TpmProtocolError(`GetCapability(HANDLES) answered ${res.capability}`);
    const inRange = res.handles.filter((h) => h >= first && h <= last);
    out.push(...inRange);
    const lastSeen = res.handles.at(-1);
    if (!res.moreData || lastSeen === undefined || lastSeen >= last) return out;
    from = lastSeen + 1;
  }
}

/**
 * Reads all `dataSize` bytes of an NV index, in chunks of at most TPM_PT_NV_BUFFER_MAX (a TPM
 * answers TPM_RC_VALUE to a larger read, Part 3 §31.13.1). `chunk` overrides the TPM's maximum.
 */
export async function readNv(tpm: Tpm, nvIndex: number, chunk?: number): Promise<{ readonly nvPublic: NvPublic; readonly data: Uint8Array }> {
  const { nvPublic } = await tpm.execute(NvReadPublic, { nvIndex });
  const max = chunk ?? (await nvBufferMax(tpm));
  const parts: Uint8Array[] = [];
  for (let offset = 0; offset < nvPublic.dataSize; ) {
    const size = Math.min(max, nvPublic.dataSize - offset);
    const part = await tpm.execute(NvRead, { nvIndex, size, offset });
    if (part.length !== size) throw new TpmProtocolError(`NV_Read of ${size} bytes at ${offset} of 0x${nvIndex.toString(16)} returned ${part.length}`);
    parts.push(part);
    offset += size;
  }
  return { nvPublic, data: new Uint8Array(Buffer.concat(parts)) };
}

/**
 * Splits concatenated DER structures (a chain index may hold several certificates) by their outer
 * lengths. Stops at trailing padding (0x00 or 0xFF bytes): indices are often larger than what they hold.
 */
export function splitDer(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  const r = new TpmReader(bytes);
  while (r.remaining > 0) {
    if (bytes.subarray(r.offset).every((b) => b === 0x00 || b === 0xff)) break;
    const start = r.offset;
    if (r.u8('DER tag') !== 0x30) throw new TpmProtocolError('not a DER SEQUENCE', start);
    const first = r.u8('DER length');
    let length = first;
    if (first & 0x80) {
      const n = first & 0x7f;
      if (n === 0 || n > 4) throw new TpmProtocolError(`DER length of ${n} bytes`, start + 1);
      length = 0;
      for (let i = 0; i < n; i++) length = length * 256 + r.u8('DER length');
    }
    r.bytes(length, 'DER contents');
    out.push(r.since(start).slice());
  }
  return out;
}
