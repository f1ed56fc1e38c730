/**
 * The enrollment exchange's files, versioned JSON: request (device → verifier), challenge
 * (verifier → device), answer (device → verifier), the verifier's pending state, and the
 * enrollment record. Byte fields are base64 where Keylime's registrar has the same field
 * (`ek_tpm`, `aik_tpm` as TPM2B_PUBLIC, `ekcert` as DER, `blob` as the tpm2-tools credential file,
 * `key` = base64(secret), `auth_tag` hex; keylime/registrar and keylime/tpm/tpm_main.py
 * `encrypt_aik_with_ek`), Names hex.
 */
import type { AkAlgorithm, AkHierarchy, EkTemplateName } from '../tpm/index.js';
import { EK_TEMPLATES } from '../tpm/index.js';
import { EnrollError } from './errors.js';

/** Which AK: the deterministic primary `Tpm.createAk` makes, recreated for every quote. */
export interface AkSpec {
  readonly alg: AkAlgorithm;
  readonly hierarchy: AkHierarchy;
}

/** Device → verifier: who the device says it is and its keys. */
export interface EnrollRequest {
  readonly deviceId: string;
  /** The kernel boot id when the request was made (/proc/sys/kernel/random/boot_id). */
  readonly kernelBootId: string;
  readonly createdAt: string;
  readonly ekTemplate: EkTemplateName;
  /** `ek_tpm`: the EK's TPM2B_PUBLIC. */
  readonly ekPublic: Uint8Array;
  /** `ekcert`: the EK certificate, DER. */
  readonly ekCertificate: Uint8Array;
  /** Intermediate CA certificates the TPM holds (DER), often none. */
  readonly ekChain: readonly Uint8Array[];
  /** `aik_tpm`: the AK's TPM2B_PUBLIC. */
  readonly akPublic: Uint8Array;
  readonly akName: Uint8Array;
  readonly ak: AkSpec;
}

/** Verifier → device: a credential only the TPM holding the EK, with the AK loaded, can open. */
export interface EnrollChallenge {
  readonly challengeId: string;
  readonly deviceId: string;
  readonly ekTemplate: EkTemplateName;
  readonly akName: Uint8Array;
  readonly ak: AkSpec;
  /** `blob`: the tpm2-tools credential file. */
  readonly credential: Uint8Array;
  readonly createdAt: string;
  readonly expiresAt: string;
}

/** Device → verifier: proof of activation. */
export interface EnrollAnswer {
  readonly challengeId: string;
  readonly deviceId: string;
  /** hex(HMAC-SHA384(key = base64(secret), msg = device id)): Keylime's `auth_tag`. */
  readonly authTag: string;
}

/** What the verifier keeps between challenge and answer (secret: it holds the credential's key). */
export interface EnrollPending {
  readonly challengeId: string;
  /** base64 of the credential secret (Keylime's stored `key`). */
  readonly key: string;
  readonly request: EnrollRequest;
  /** The checked chain above the EK certificate, up to and including the trust anchor (DER). */
  readonly ekCertificatePath: readonly Uint8Array[];
  readonly createdAt: string;
  readonly expiresAt: string;
}

/** The verifier's record of an enrolled device: what `imakeep verify --enrollment` trusts. */
export interface EnrollmentRecord {
  readonly deviceId: string;
  /** The kernel boot the device enrolled in. */
  readonly kernelBootId: string;
  readonly enrolledAt: string;
  readonly challengeId: string;
  readonly ekTemplate: EkTemplateName;
  readonly ekPublic: Uint8Array;
  readonly ekName: Uint8Array;
  readonly ekCertificate: Uint8Array;
  readonly ekCertificatePath: readonly Uint8Array[];
  /** The AK the device proved is on the TPM of that EK: quotes signed by it are the device's. */
  readonly akPublic: Uint8Array;
  readonly akName: Uint8Array;
  readonly ak: AkSpec;
}

/** The `type` field of each file, and the version this code writes and reads. */
export const ENROLL_FILE_TYPES = {
  request: 'imakeep-enroll-request',
  challenge: 'imakeep-enroll-challenge',
  answer: 'imakeep-enroll-answer',
  pending: 'imakeep-enroll-pending',
  enrollment: 'imakeep-enrollment',
} as const;
export const ENROLL_FILE_VERSION = 1;

type FileKind = keyof typeof ENROLL_FILE_TYPES;

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Reads typed fields of one decoded JSON object; every failure is `ENROLL_BAD_FILE` naming the field. */
class Fields {
  constructor(
    private readonly kind: string,
    private readonly value: Record<string, unknown>,
  ) {}

  private bad(field: string, what: string): EnrollError {
    return new EnrollError('ENROLL_BAD_FILE', `${this.kind}: ${field} ${what}`, { field });
  }

  string(field: string): string {
    const v = this.value[field];
    if (typeof v !== 'string' || v.length === 0) throw this.bad(field, 'is not a non-empty string');
    return v;
  }

  date(field: string): string {
    const v = this.string(field);
    if (Number.isNaN(Date.parse(v))) throw this.bad(field, 'is not a date');
    return v;
  }

  base64(field: string, v: unknown = this.value[field]): Uint8Array {
    if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) throw this.bad(field, 'is not base64');
    return new Uint8Array(Buffer.from(v, 'base64'));
  }

  base64List(field: string): Uint8Array[] {
    const v = this.value[field];
    if (!Array.isArray(v)) throw this.bad(field, 'is not a list');
    return v.map((item: unknown) => this.base64(field, item));
  }

  hex(field: string): Uint8Array {
    const v = this.value[field];
    if (typeof v !== 'string' || !/^([0-9a-f]{2})+$/.test(v)) throw this.bad(field, 'is not lowercase hex');
    return new Uint8Array(Buffer.from(v, 'hex'));
  }

  /** A challenge id: 32 lowercase hex digits (it also names the verifier's pending file). */
  challengeId(): string {
    const v = this.string('challenge_id');
    if (!/^[0-9a-f]{32}$/.test(v)) throw this.bad('challenge_id', 'is not 32 hex digits');
    return v;
  }

  template(field: string): EkTemplateName {
    const v = this.string(field);
    const t = [...EK_TEMPLATES.keys()].find((name) => name === v);
    if (t === undefined) throw this.bad(field, `is not an EK template (${[...EK_TEMPLATES.keys()].join(', ')})`);
    return t;
  }

  ak(): AkSpec {
    const alg = this.value.ak_alg;
    const hierarchy = this.value.ak_hierarchy;
    if (alg !== 'ecc' && alg !== 'rsa') throw this.bad('ak_alg', 'is not ecc or rsa');
    if (hierarchy !== 'endorsement' && hierarchy !== 'owner') throw this.bad('ak_hierarchy', 'is not endorsement or owner');
    return { alg, hierarchy };
  }

  object(field: string): Record<string, unknown> {
    const v = this.value[field];
    if (!isObject(v)) throw this.bad(field, 'is not an object');
    return v;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses a file's JSON and checks its type and version. */
function open(kind: FileKind, input: string | Record<string, unknown>): Fields {
  let value: unknown = input;
  if (typeof input === 'string') {
    try {
      value = JSON.parse(input);
    } catch (e) {
      throw new EnrollError('ENROLL_BAD_FILE', `${kind}: not JSON (${e instanceof Error ? e.message : String(e)})`, { field: '' });
    }
  }
  if (!isObject(value)) throw new EnrollError('ENROLL_BAD_FILE', `${kind}: not a JSON object`, { field: '' });
  if (value.type !== ENROLL_FILE_TYPES[kind]) {
    throw new EnrollError('ENROLL_BAD_FILE', `${kind}: type is ${JSON.stringify(value.type)}, expected ${ENROLL_FILE_TYPES[kind]}`, { field: 'type' });
  }
  if (value.version !== ENROLL_FILE_VERSION) {
    throw new EnrollError('ENROLL_BAD_FILE', `${kind}: version ${JSON.stringify(value.version)} is not ${ENROLL_FILE_VERSION}`, { field: 'version' });
  }
  return new Fields(kind, value);
}

const header = (kind: FileKind): { type: string; version: number } => ({ type: ENROLL_FILE_TYPES[kind], version: ENROLL_FILE_VERSION });

function requestJson(r: EnrollRequest): Record<string, unknown> {
  return {
    ...header('request'),
    device_id: r.deviceId,
    kernel_boot_id: r.kernelBootId,
    created_at: r.createdAt,
    ek_template: r.ekTemplate,
    ek_tpm: b64(r.ekPublic),
    ekcert: b64(r.ekCertificate),
    ekcert_chain: r.ekChain.map(b64),
    aik_tpm: b64(r.akPublic),
    ak_name: hex(r.akName),
    ak_alg: r.ak.alg,
    ak_hierarchy: r.ak.hierarchy,
  };
}

function requestFrom(input: string | Record<string, unknown>): EnrollRequest {
  const f = open('request', input);
  return {
    deviceId: f.string('device_id'),
    kernelBootId: f.string('kernel_boot_id'),
    createdAt: f.date('created_at'),
    ekTemplate: f.template('ek_template'),
    ekPublic: f.base64('ek_tpm'),
    ekCertificate: f.base64('ekcert'),
    ekChain: f.base64List('ekcert_chain'),
    akPublic: f.base64('aik_tpm'),
    akName: f.hex('ak_name'),
    ak: f.ak(),
  };
}

const text = (json: Record<string, unknown>): string => `${JSON.stringify(json, null, 2)}\n`;

/** The request as its JSON file. */
export const encodeEnrollRequest = (r: EnrollRequest): string => text(requestJson(r));
/** Parses a request file; `ENROLL_BAD_FILE` naming the field. */
export const decodeEnrollRequest = (input: string): EnrollRequest => requestFrom(input);

/** The challenge as its JSON file. */
export function encodeEnrollChallenge(c: EnrollChallenge): string {
  return text({
    ...header('challenge'),
    challenge_id: c.challengeId,
    device_id: c.deviceId,
    ek_template: c.ekTemplate,
    ak_name: hex(c.akName),
    ak_alg: c.ak.alg,
    ak_hierarchy: c.ak.hierarchy,
    blob: b64(c.credential),
    created_at: c.createdAt,
    expires_at: c.expiresAt,
  });
}

/** Parses a challenge file. */
export function decodeEnrollChallenge(input: string): EnrollChallenge {
  const f = open('challenge', input);
  return {
    challengeId: f.challengeId(),
    deviceId: f.string('device_id'),
    ekTemplate: f.template('ek_template'),
    akName: f.hex('ak_name'),
    ak: f.ak(),
    credential: f.base64('blob'),
    createdAt: f.date('created_at'),
    expiresAt: f.date('expires_at'),
  };
}

/** The answer as its JSON file. */
export function encodeEnrollAnswer(a: EnrollAnswer): string {
  return text({ ...header('answer'), challenge_id: a.challengeId, device_id: a.deviceId, auth_tag: a.authTag });
}

/** Parses an answer file. */
export function decodeEnrollAnswer(input: string): EnrollAnswer {
  const f = open('answer', input);
  const authTag = f.string('auth_tag');
  if (!/^[0-9a-f]{96}$/.test(authTag)) throw new EnrollError('ENROLL_BAD_FILE', 'answer: auth_tag is not 96 hex digits (HMAC-SHA384)', { field: 'auth_tag' });
  return { challengeId: f.challengeId(), deviceId: f.string('device_id'), authTag };
}

/** The pending state as its JSON file (keep it private: it holds the credential's key). */
export function encodeEnrollPending(p: EnrollPending): string {
  return text({
    ...header('pending'),
    challenge_id: p.challengeId,
    key: p.key,
    request: requestJson(p.request),
    ekcert_path: p.ekCertificatePath.map(b64),
    created_at: p.createdAt,
    expires_at: p.expiresAt,
  });
}

/** Parses a pending state file. */
export function decodeEnrollPending(input: string): EnrollPending {
  const f = open('pending', input);
  return {
    challengeId: f.challengeId(),
    key: Buffer.from(f.base64('key')).toString('base64'),
    request: requestFrom(f.object('request')),
    ekCertificatePath: f.base64List('ekcert_path'),
    createdAt: f.date('created_at'),
    expiresAt: f.date('expires_at'),
  };
}

/** The enrollment record as its JSON file. */
export function encodeEnrollmentRecord(r: EnrollmentRecord): string {
  return text({
    ...header('enrollment'),
    device_id: r.deviceId,
    kernel_boot_id: r.kernelBootId,
    enrolled_at: r.enrolledAt,
    challenge_id: r.challengeId,
    ek_template: r.ekTemplate,
    ek_tpm: b64(r.ekPublic),
    ek_name: hex(r.ekName),
    ekcert: b64(r.ekCertificate),
    ekcert_path: r.ekCertificatePath.map(b64),
    aik_tpm: b64(r.akPublic),
    ak_name: hex(r.akName),
    ak_alg: r.ak.alg,
    ak_hierarchy: r.ak.hierarchy,
  });
}

/** Parses an enrollment record file. */
export function decodeEnrollmentRecord(input: string): EnrollmentRecord {
  const f = open('enrollment', input);
  return {
    deviceId: f.string('device_id'),
    kernelBootId: f.string('kernel_boot_id'),
    enrolledAt: f.date('enrolled_at'),
    challengeId: f.challengeId(),
    ekTemplate: f.template('ek_template'),
    ekPublic: f.base64('ek_tpm'),
    ekName: f.hex('ek_name'),
    ekCertificate: f.base64('ekcert'),
    ekCertificatePath: f.base64List('ekcert_path'),
    akPublic: f.base64('aik_tpm'),
    akName: f.hex('ak_name'),
    ak: f.ak(),
  };
}
