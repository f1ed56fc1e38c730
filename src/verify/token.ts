/**
 * The fleet's acknowledgement as an attestation result: an IETF RATS EAR (EAT Attestation Result,
 * draft-ietf-rats-ear §3) carried as a JWT signed with ES256 (RFC 7519, RFC 7518 §3.4), so any
 * relying party with the fleet's public key can read the verdict, and any verifier can go on
 * checking a device's log from where the fleet's verified log ends without the records before it
 * (`imakeep verify --from-token`).
 *
 * Claims (draft-ietf-rats-ear §3.1):
 *   eat_profile       "tag:github.com,2023:veraison/ear"
 *   iat               seconds since the epoch
 *   ear.verifier-id   { developer, build }
 *   submods           { <device id>: { ear.status, ear.appraisal-policy-id?, imakeep.verified } }
 * `ear.status` is the draft's trust tier: affirming, warning, contraindicated or none.
 * `imakeep.verified` is this implementation's claim (the draft allows profile-specific claims in an
 * appraisal): the verifier state (`VerifyStateJson`: cursor, global index, PCR values of every
 * bank, last chunk hash, last checkpoint's quote for the nonce chain and TPM clock order) where the
 * verified log ends, the records verified, and the freshness of the newest quote over the fleet's
 * own nonce.
 */
import { createPrivateKey, createPublicKey, sign, verify as verifySignature, type KeyObject } from 'node:crypto';
import { VerifyError } from './errors.js';
import { verifyStateFromJson, type VerifyStateJson } from './state.js';
import type { VerifyState } from './verifier.js';

/** The EAR profile this token follows (draft-ietf-rats-ear §3.1, `eat_profile`). */
export const EAR_PROFILE = 'tag:github.com,2023:veraison/ear';

/** The draft's trust tiers (draft-ietf-rats-ear §3.1, `ear.status`). */
export type EarStatus = 'affirming' | 'warning' | 'contraindicated' | 'none';

const STATUSES: readonly EarStatus[] = ['affirming', 'warning', 'contraindicated', 'none'];

/** What an acknowledgement says about one device. */
export interface DeviceAppraisal {
  readonly deviceId: string;
  readonly status: EarStatus;
  /** The runtime policy the records were judged by, if one was assigned. */
  readonly policyId: string | null;
  /** Where the verified log ends. */
  readonly verified: VerifyStateJson;
  /** Records verified so far, over every boot. */
  readonly recordsVerified: number;
  /** Acknowledgement number (per device, increasing). */
  readonly seq: number;
  /** Seconds since the epoch of the newest quote over the fleet's own nonce, or null if none. */
  readonly freshAt: number | null;
}

/** A decoded, signature-checked token. */
export interface EarToken extends DeviceAppraisal {
  /** Seconds since the epoch the token was issued. */
  readonly iat: number;
  readonly verifierId: { readonly developer: string; readonly build: string };
  /** The verifier state to go on from (`EvidenceVerifier`'s `state` option). */
  readonly state: VerifyState;
}

const base64url = (bytes: Uint8Array | string): string => Buffer.from(bytes).toString('base64url');

function tokenError(message: string, cause?: unknown): VerifyError {
  return new VerifyError('VERIFY_TOKEN', `EAR token: ${message}`, { check: 'token' }, cause === undefined ? undefined : { cause });
}

/** Signs the appraisal of one device as an EAR JWT (ES256, P-256 key). */
export function signEarToken(appraisal: DeviceAppraisal, key: KeyObject, verifierId: EarToken['verifierId'], now: Date = new Date()): string {
  const header = { alg: 'ES256', typ: 'JWT' };
  const submod: Record<string, unknown> = {
    'ear.status': appraisal.status,
    'imakeep.verified': appraisal.verified,
    'imakeep.records-verified': appraisal.recordsVerified,
    'imakeep.seq': appraisal.seq,
    'imakeep.fresh-at': appraisal.freshAt,
  };
  if (appraisal.policyId !== null) submod['ear.appraisal-policy-id'] = appraisal.policyId;
  const claims = {
    eat_profile: EAR_PROFILE,
    iat: Math.floor(now.getTime() / 1000),
    'ear.verifier-id': verifierId,
    submods: { [appraisal.deviceId]: submod },
  };
  const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  // JWS ES256 signatures are R ‖ S, 32 bytes each (RFC 7518 §3.4), not DER.
  const signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${base64url(signature)}`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJson(part: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch (e) {
    throw tokenError(`the ${what} is not base64url JSON`, e);
  }
  if (!isRecord(value)) throw tokenError(`the ${what} is not a JSON object`);
  return value;
}

/**
 * Checks a token's ES256 signature with the fleet's public key and reads it; throws
 * `VERIFY_TOKEN` for anything else (another key, another algorithm, a claim missing).
 */
export function verifyEarToken(token: string, fleetKey: KeyObject): EarToken {
  const parts = token.trim().split('.');
  const [h, c, s] = parts;
  if (parts.length !== 3 || h === undefined || c === undefined || s === undefined) throw tokenError('not three dot-separated parts (a JWS compact serialisation)');
  const header = parseJson(h, 'header');
  if (header.alg !== 'ES256') throw tokenError(`alg is ${JSON.stringify(header.alg)}, not ES256`);
  const signature = Buffer.from(s, 'base64url');
  let valid: boolean;
  try {
    valid = verifySignature('sha256', Buffer.from(`${h}.${c}`), { key: fleetKey, dsaEncoding: 'ieee-p1363' }, signature);
  } catch (e) {
    throw tokenError('the signature cannot be checked with this key', e);
  }
  if (!valid) throw tokenError('the signature does not verify with the fleet key');
  const claims = parseJson(c, 'claims');
  if (claims.eat_profile !== EAR_PROFILE) throw tokenError(`eat_profile is not ${EAR_PROFILE}`);
  const verifierId = claims['ear.verifier-id'];
  const submods = claims.submods;
  if (typeof claims.iat !== 'number' || !isRecord(verifierId) || !isRecord(submods)) throw tokenError('needs iat, ear.verifier-id and submods');
  const entries = Object.entries(submods);
  const [entry] = entries;
  if (entries.length !== 1 || entry === undefined) throw tokenError('needs exactly one submod (one device)');
  const [deviceId, submod] = entry;
  if (!isRecord(submod)) throw tokenError(`submod ${deviceId} is not an object`);
  const status = STATUSES.find((x) => x === submod['ear.status']);
  const verified = submod['imakeep.verified'];
  const records = submod['imakeep.records-verified'];
  const seq = submod['imakeep.seq'];
  const freshAt = submod['imakeep.fresh-at'];
  const policy = submod['ear.appraisal-policy-id'];
  if (status === undefined || !isRecord(verified) || typeof records !== 'number' || typeof seq !== 'number' || !(freshAt === null || typeof freshAt === 'number')) {
    throw tokenError(`submod ${deviceId} needs ear.status, imakeep.verified, imakeep.records-verified, imakeep.seq and imakeep.fresh-at`);
  }
  const verifiedText = JSON.stringify(verified);
  let state: VerifyState;
  try {
    state = verifyStateFromJson(verifiedText);
  } catch (e) {
    throw tokenError(`imakeep.verified is not a verifier state (${e instanceof Error ? e.message : String(e)})`, e);
  }
  return {
    deviceId,
    status,
    policyId: typeof policy === 'string' ? policy : null,
    verified: JSON.parse(verifiedText) as VerifyStateJson,
    recordsVerified: records,
    seq,
    freshAt,
    iat: claims.iat,
    verifierId: { developer: String(verifierId.developer), build: String(verifierId.build) },
    state,
  };
}

/** A fleet public key from PEM (SPKI) or a private key's PEM (its public half); `VERIFY_TOKEN` if neither. */
export function fleetKeyFromPem(pem: string): KeyObject {
  try {
    return createPublicKey(pem);
  } catch (e) {
    try {
      return createPublicKey(createPrivateKey(pem));
    } catch {
      throw tokenError('the fleet key is not a PEM public key', e);
    }
  }
}
