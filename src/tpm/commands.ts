/**
 * The TPM commands imakeep sends, one constant each: request type, response type, and the
 * TPM 2.0 Library Part 3 section that defines them. Send one with `Tpm.execute(command, request)`.
 */
import { TPM_ALG, TPM_CAP, TPM_CC } from './constants.js';
import { TpmProtocolError } from './errors.js';
import type { TpmReader } from './marshal.js';
import type { TpmCommand } from './command.js';
import {
  type AkAlgorithm,
  type PcrSelection,
  readDigestList,
  readPcrSelections,
  readPublic,
  readSignature,
  writeAkTemplate,
  writePcrSelections,
} from './structures.js';

const none = (): readonly number[] => [];
const nothing = (): void => undefined;

/** Input of TPM2_Startup. */
export interface StartupRequest {
  /** TPM_SU_CLEAR or TPM_SU_STATE. */
  readonly startupType: number;
}

/** TPM2_Startup: Part 3 §9.3. Only for simulators without `startup-clear`; firmware does it on hardware. */
export const Startup: TpmCommand<StartupRequest, void> = {
  name: 'TPM2_Startup',
  code: TPM_CC.Startup,
  handles: none,
  authorized: 0,
  responseHandles: 0,
  writeParams: (w, req) => void w.u16(req.startupType),
  readParams: nothing,
};

/** Input of TPM2_GetCapability. */
export interface GetCapabilityRequest {
  /** TPM_CAP_HANDLES, TPM_CAP_PCRS or TPM_CAP_TPM_PROPERTIES (those this client decodes). */
  readonly capability: number;
  /** First property: for TPM_CAP_HANDLES the first handle, e.g. 0x80000000 for transients. */
  readonly property: number;
  readonly propertyCount: number;
}

/** Output of TPM2_GetCapability (`TPMS_CAPABILITY_DATA`, Part 2 §10.10.2), for the decoded capabilities. */
export type GetCapabilityResponse = { readonly moreData: boolean } & (
  | { readonly capability: 'handles'; readonly handles: readonly number[] }
  | { readonly capability: 'pcrs'; readonly selections: readonly PcrSelection[] }
  | { readonly capability: 'properties'; readonly properties: ReadonlyMap<number, number> }
);

/** TPM2_GetCapability: Part 3 §30.2. */
export const GetCapability: TpmCommand<GetCapabilityRequest, GetCapabilityResponse> = {
  name: 'TPM2_GetCapability',
  code: TPM_CC.GetCapability,
  handles: none,
  authorized: 0,
  responseHandles: 0,
  writeParams: (w, req) => void w.u32(req.capability).u32(req.property).u32(req.propertyCount),
  readParams(r: TpmReader): GetCapabilityResponse {
    const moreData = r.u8('moreData') !== 0;
    const capability = r.u32('capability');
    if (capability === TPM_CAP.HANDLES) {
      const count = r.u32('TPML_HANDLE.count');
      // Bound by the bytes actually present before allocating.
      if (count * 4 > r.remaining) throw new TpmProtocolError(`TPML_HANDLE count ${count} exceeds response`, r.offset - 4);
      return { moreData, capability: 'handles', handles: Array.from({ length: count }, () => r.u32('handle')) };
    }
    if (capability === TPM_CAP.PCRS) return { moreData, capability: 'pcrs', selections: readPcrSelections(r) };
    if (capability === TPM_CAP.TPM_PROPERTIES) {
      // TPML_TAGGED_TPM_PROPERTY (Part 2 §10.9.8): count, then (property, value) pairs.
      const count = r.u32('TPML_TAGGED_TPM_PROPERTY.count');
      if (count * 8 > r.remaining) throw new TpmProtocolError(`TPML_TAGGED_TPM_PROPERTY count ${count} exceeds response`, r.offset - 4);
      const properties = new Map<number, number>();
      for (let i = 0; i < count; i++) properties.set(r.u32('property'), r.u32('value'));
      return { moreData, capability: 'properties', properties };
    }
    throw new TpmProtocolError(`capability 0x${capability.toString(16)} not decoded`, r.offset - 4);
  },
};

/** Input of TPM2_PCR_Read. */
export interface PcrReadRequest {
  readonly selections: readonly PcrSelection[];
}

/** Output of TPM2_PCR_Read. */
export interface PcrReadResponse {
  /** Incremented on every PCR change: equal counters mean consistent reads. */
  readonly updateCounter: number;
  /** The PCRs whose values are returned (at most 8; a subset of the request). */
  readonly selections: readonly PcrSelection[];
  /** Values in selection order. */
  readonly digests: readonly Uint8Array[];
}

/** TPM2_PCR_Read: Part 3 §22.4. Returns at most 8 digests per call; read the rest in more calls. */
export const PcrRead: TpmCommand<PcrReadRequest, PcrReadResponse> = {
  name: 'TPM2_PCR_Read',
  code: TPM_CC.PCR_Read,
  handles: none,
  authorized: 0,
  responseHandles: 0,
  writeParams: (w, req) => writePcrSelections(w, req.selections),
  readParams: (r) => ({
    updateCounter: r.u32('pcrUpdateCounter'),
    selections: readPcrSelections(r),
    digests: readDigestList(r),
  }),
};

/** Input of TPM2_PCR_Extend. */
export interface PcrExtendRequest {
  readonly pcr: number;
  /** `TPML_DIGEST_VALUES`: one digest per bank to extend, each the size of its algorithm. */
  readonly digests: readonly { readonly hashAlg: number; readonly digest: Uint8Array }[];
}

/** TPM2_PCR_Extend: Part 3 §22.2. Authorized with the PCR's (empty) auth value. */
export const PcrExtend: TpmCommand<PcrExtendRequest, void> = {
  name: 'TPM2_PCR_Extend',
  code: TPM_CC.PCR_Extend,
  handles: (req) => [req.pcr],
  authorized: 1,
  responseHandles: 0,
  writeParams(w, req) {
    w.u32(req.digests.length);
    for (const { hashAlg, digest } of req.digests) w.u16(hashAlg).bytes(digest);
  },
  readParams: nothing,
};

/** Input of TPM2_PCR_Reset. */
export interface PcrResetRequest {
  /** A PCR resettable at the caller's locality: on a PC Client TPM, 16 (debug) and 23 at locality 0. */
  readonly pcr: number;
}

/**
 * TPM2_PCR_Reset: Part 3 §22.3. Sets the PCR to its default value (all zeros for PCR 16) in every
 * bank; authorized with the PCR's (empty) auth value. TPM_RC_LOCALITY for a PCR not resettable here.
 */
export const PcrReset: TpmCommand<PcrResetRequest, void> = {
  name: 'TPM2_PCR_Reset',
  code: TPM_CC.PCR_Reset,
  handles: (req) => [req.pcr],
  authorized: 1,
  responseHandles: 0,
  writeParams: nothing,
  readParams: nothing,
};

/**
 * Input of TPM2_CreatePrimary: an attestation key of `alg` (the template of `writeAkTemplate`), or
 * any other primary from its `TPMT_PUBLIC` template bytes (an EK template, `ek.ts`).
 */
export type CreatePrimaryRequest = {
  /** TPM_RH_ENDORSEMENT (real reset/restart counts in quotes) or TPM_RH_OWNER. */
  readonly hierarchy: number;
} & ({ readonly alg: AkAlgorithm } | { readonly template: Uint8Array });

/** Output of TPM2_CreatePrimary (creation data, hash and ticket are skipped). */
export interface CreatePrimaryResponse {
  /** Transient handle of the loaded key: flush it with FlushContext. */
  readonly handle: number;
  /** `TPM2B_PUBLIC` bytes exactly as returned (u16 size | TPMT_PUBLIC). */
  readonly outPublic: Uint8Array;
  /** `TPM2B_NAME` contents: nameAlg ‖ H(TPMT_PUBLIC). */
  readonly name: Uint8Array;
}

/** Reads a `TPM2B_PUBLIC` and returns its raw bytes after checking its inner layout parses. */
export function readTpm2bPublic(r: TpmReader): Uint8Array {
  const start = r.offset;
  const inner = r.sub(r.u16('TPM2B_PUBLIC.size'), 'TPMT_PUBLIC');
  readPublic(inner);
  inner.expectEnd('TPMT_PUBLIC');
  return r.since(start).slice();
}

/**
 * TPM2_CreatePrimary: Part 3 §24.1, with the restricted-signing-key template of `writeAkTemplate`
 * or the template given, an empty auth value and no creation PCRs.
 */
export const CreatePrimary: TpmCommand<CreatePrimaryRequest, CreatePrimaryResponse> = {
  name: 'TPM2_CreatePrimary',
  code: TPM_CC.CreatePrimary,
  handles: (req) => [req.hierarchy],
  authorized: 1,
  responseHandles: 1,
  writeParams(w, req) {
    w.u16(4).u16(0).u16(0); // TPM2B_SENSITIVE_CREATE: empty userAuth, empty data
    const sizeAt = w.length;
    w.u16(0);
    if ('template' in req) w.bytes(req.template);
    else writeAkTemplate(w, req.alg);
    w.patchU16(sizeAt, w.length - sizeAt - 2); // TPM2B_PUBLIC.size, known only now
    w.u16(0); // outsideInfo: empty
    w.u32(0); // creationPCR: none
  },
  readParams(r, handles) {
    const outPublic = readTpm2bPublic(r);
    r.tpm2b('creationData');
    r.tpm2b('creationHash');
    r.u16('creationTicket.tag');
    r.u32('creationTicket.hierarchy');
    r.tpm2b('creationTicket.digest');
    const name = r.tpm2b('name').slice();
    return { handle: handles[0] ?? 0, outPublic, name };
  },
};

/** Input of TPM2_ReadPublic. */
export interface ReadPublicRequest {
  readonly handle: number;
}

/** Output of TPM2_ReadPublic. */
export interface ReadPublicResponse {
  /** `TPM2B_PUBLIC` bytes exactly as returned. */
  readonly outPublic: Uint8Array;
  readonly name: Uint8Array;
  readonly qualifiedName: Uint8Array;
}

/** TPM2_ReadPublic: Part 3 §12.4. */
export const ReadPublic: TpmCommand<ReadPublicRequest, ReadPublicResponse> = {
  name: 'TPM2_ReadPublic',
  code: TPM_CC.ReadPublic,
  handles: (req) => [req.handle],
  authorized: 0,
  responseHandles: 0,
  writeParams: nothing,
  readParams: (r) => ({
    outPublic: readTpm2bPublic(r),
    name: r.tpm2b('name').slice(),
    qualifiedName: r.tpm2b('qualifiedName').slice(),
  }),
};

/** Input of TPM2_Quote. */
export interface QuoteRequest {
  /** Handle of the restricted signing key (empty auth value). */
  readonly signHandle: number;
  /** qualifyingData: the verifier's nonce (at most the size of the key's name digest). */
  readonly qualifyingData: Uint8Array;
  readonly selections: readonly PcrSelection[];
}

/** Output of TPM2_Quote, both as the raw bytes the TPM signed/returned. */
export interface QuoteResponse {
  /** `TPMS_ATTEST` bytes exactly as returned (the contents of TPM2B_ATTEST): never re-serialize. */
  readonly attest: Uint8Array;
  /** `TPMT_SIGNATURE` bytes exactly as returned (the format `tpm2_quote -s` writes). */
  readonly signature: Uint8Array;
}

/** TPM2_Quote: Part 3 §18.4, with inScheme TPM_ALG_NULL (use the key's own scheme). */
export const Quote: TpmCommand<QuoteRequest, QuoteResponse> = {
  name: 'TPM2_Quote',
  code: TPM_CC.Quote,
  handles: (req) => [req.signHandle],
  authorized: 1,
  responseHandles: 0,
  writeParams(w, req) {
    w.tpm2b(req.qualifyingData).u16(TPM_ALG.NULL);
    writePcrSelections(w, req.selections);
  },
  readParams(r) {
    const attest = r.tpm2b('TPM2B_ATTEST').slice();
    const start = r.offset;
    readSignature(r);
    return { attest, signature: r.since(start).slice() };
  },
};

/** Input of TPM2_FlushContext. */
export interface FlushContextRequest {
  /** Transient object or session handle to unload. */
  readonly flushHandle: number;
}

/** TPM2_FlushContext: Part 3 §28.4. The handle is a parameter, not in the handle area. */
export const FlushContext: TpmCommand<FlushContextRequest, void> = {
  name: 'TPM2_FlushContext',
  code: TPM_CC.FlushContext,
  handles: none,
  authorized: 0,
  responseHandles: 0,
  writeParams: (w, req) => void w.u32(req.flushHandle),
  readParams: nothing,
};

/** Input of TPM2_GetRandom. */
export interface GetRandomRequest {
  /** At most the size of the TPM's largest digest (64 on swtpm); the TPM may return fewer. */
  readonly bytesRequested: number;
}

/** TPM2_GetRandom: Part 3 §16.1. */
export const GetRandom: TpmCommand<GetRandomRequest, Uint8Array> = {
  name: 'TPM2_GetRandom',
  code: TPM_CC.GetRandom,
  handles: none,
  authorized: 0,
  responseHandles: 0,
  writeParams: (w, req) => void w.u16(req.bytesRequested),
  readParams: (r) => r.tpm2b('randomBytes').slice(),
};
