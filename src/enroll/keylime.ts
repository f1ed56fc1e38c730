/**
 * Registration with a Keylime registrar, as the Keylime agent registers (rust-keylime
 * `keylime-agent/src/registrar_agent.rs` `do_register_agent`/`do_activate_agent`; keylime
 * `registrar_client.py` `doRegisterAgent`/`doActivateAgent`; the registrar API in keylime
 * `docs/rest_apis/2_x/registrar.rst`):
 *
 * 1. `POST /v2.x/agents/{uuid}` with the EK (`ek_tpm`, TPM2B_PUBLIC, base64), its certificate
 *    (`ekcert`, DER, base64), the AK (`aik_tpm`, TPM2B_PUBLIC, base64), the agent's mTLS server
 *    certificate (`mtls_cert`, PEM, or `disabled`) and where a verifier reaches it (`ip`, `port`);
 *    the registrar answers `blob`: a credential made for the AK's Name under the EK, in the
 *    tpm2-tools file format (base64).
 * 2. ActivateCredential with that EK and AK gives the secret back (the registrar's 32-character
 *    challenge), which only this TPM can do.
 * 3. `PUT /v2.x/agents/{uuid}/activate` with `auth_tag` = hex(HMAC-SHA384(base64(secret), uuid)),
 *    the documented activation of every 2.x version; the registrar then marks the AK active.
 *
 * Steps 1 and 3 are HTTP, plain as the agent's are (the registrar's agent routes take no TLS).
 */
import { createEnrollRequest, answerEnrollChallenge, type EnrollRequestOptions } from './enroll.js';
import { EnrollError } from './errors.js';
import type { AkSpec, EnrollChallenge } from './formats.js';
import type { EkTemplateName, Tpm } from '../tpm/index.js';

/** The registrar API version registration speaks by default (the pull agent's, rust-keylime `API_VERSION`). */
export const KEYLIME_REGISTRAR_API_VERSION = '2.2';

/** Agent ids the registrar accepts (keylime `common/validators.py` `valid_agent_id`: `[\w.-]+`). */
const AGENT_ID = /^[A-Za-z0-9_.-]+$/;

/** The body of `POST /v2.x/agents/{uuid}`, field for field the agent's `Register`. */
export interface KeylimeRegisterBody {
  /** EK certificate, DER, base64. */
  readonly ekcert: string;
  /** EK, TPM2B_PUBLIC, base64. */
  readonly ek_tpm: string;
  /** AK, TPM2B_PUBLIC, base64. */
  readonly aik_tpm: string;
  /** The agent's mTLS server certificate, PEM; `disabled` without one. */
  readonly mtls_cert: string;
  /** Address and port a verifier pulls quotes from. */
  readonly ip?: string;
  readonly port?: number;
}

/** What registration sends, and what activation needs to find the same EK and AK again. */
export interface KeylimeRegistration {
  readonly uuid: string;
  readonly body: KeylimeRegisterBody;
  readonly ekTemplate: EkTemplateName;
  readonly ak: AkSpec;
  readonly akName: Uint8Array;
}

/** Options of {@link keylimeRegistration}. */
export interface KeylimeRegistrationOptions {
  /** The agent's UUID at the registrar (and the verifier). */
  readonly uuid: string;
  /** The PEM server certificate of the daemon's HTTPS listener; `disabled` without one. */
  readonly mtlsCert?: string;
  /** Where a verifier reaches the daemon's listener. */
  readonly ip?: string;
  readonly port?: number;
  /** The EK to register; default the first the TPM has a certificate for. */
  readonly ekTemplate?: EnrollRequestOptions['ekTemplate'];
}

/**
 * Reads what registration sends from the TPM: the EK and its certificate, and the Keylime-mode AK
 * (RSA 2048, RSASSA-SHA256, endorsement hierarchy: the one the Keylime routes quote with). Throws
 * `KEYLIME_BAD_UUID`, or `ENROLL_EK_CERT_MISSING` when the TPM holds no EK certificate.
 */
export async function keylimeRegistration(tpm: Tpm, options: KeylimeRegistrationOptions): Promise<KeylimeRegistration> {
  if (!AGENT_ID.test(options.uuid)) {
    throw new EnrollError('KEYLIME_BAD_UUID', `agent id '${options.uuid.slice(0, 64)}' is not letters, digits, '_', '.' and '-'`, { deviceId: options.uuid.slice(0, 64) });
  }
  const request = await createEnrollRequest(tpm, {
    deviceId: options.uuid,
    kernelBootId: '',
    ak: { alg: 'rsa', hierarchy: 'endorsement' },
    ...(options.ekTemplate === undefined ? {} : { ekTemplate: options.ekTemplate }),
  });
  const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
  const body: KeylimeRegisterBody = {
    ekcert: b64(request.ekCertificate),
    ek_tpm: b64(request.ekPublic),
    aik_tpm: b64(request.akPublic),
    mtls_cert: options.mtlsCert ?? 'disabled',
    ...(options.ip === undefined ? {} : { ip: options.ip }),
    ...(options.port === undefined ? {} : { port: options.port }),
  };
  return { uuid: options.uuid, body, ekTemplate: request.ekTemplate, ak: request.ak, akName: request.akName };
}

/**
 * Step 2: activates the registrar's `blob` (a tpm2-tools credential file) with the registered EK
 * and AK, and returns the `auth_tag` for step 3. Throws `TPM_BAD_CREDENTIAL_BLOB`,
 * `ENROLL_AK_CHANGED` or `ENROLL_ACTIVATION_FAILED`.
 */
export async function keylimeAuthTag(tpm: Tpm, registration: KeylimeRegistration, blob: Uint8Array): Promise<string> {
  const now = new Date().toISOString();
  // The registrar's blob is a credential challenge like an enrollment's, with no id or expiry of its own.
  const challenge: EnrollChallenge = {
    challengeId: '',
    deviceId: registration.uuid,
    ekTemplate: registration.ekTemplate,
    akName: registration.akName,
    ak: registration.ak,
    credential: blob,
    createdAt: now,
    expiresAt: now,
  };
  return (await answerEnrollChallenge(tpm, challenge)).authTag;
}

/** Options of {@link registerWithKeylime}. */
export interface KeylimeRegisterOptions extends KeylimeRegistrationOptions {
  /** The registrar's base URL, `http://HOST:PORT`. */
  readonly registrar: string;
  /** Registrar API version in the paths; default {@link KEYLIME_REGISTRAR_API_VERSION}. */
  readonly apiVersion?: string;
}

/** Sends one JSON request; returns the `results` of a 200 answer, throws `KEYLIME_REGISTRAR_REFUSED` otherwise. */
async function registrarCall(method: 'POST' | 'PUT', url: string, body: unknown): Promise<Record<string, unknown>> {
  let response: Response;
  try {
    response = await fetch(url, { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  } catch (e) {
    throw new EnrollError('KEYLIME_REGISTRAR_REFUSED', `${method} ${url}: ${e instanceof Error ? e.message : String(e)}`, { url }, { cause: e });
  }
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const results = typeof parsed === 'object' && parsed !== null && 'results' in parsed ? parsed.results : undefined;
  if (response.status !== 200 || typeof results !== 'object' || results === null) {
    const status = typeof parsed === 'object' && parsed !== null && 'status' in parsed ? String(parsed.status) : text.slice(0, 200);
    throw new EnrollError('KEYLIME_REGISTRAR_REFUSED', `${method} ${url}: HTTP ${response.status}: ${status}`, { url, httpStatus: response.status });
  }
  return results as Record<string, unknown>;
}

/**
 * Registers the device's TPM with a Keylime registrar and activates it (steps 1 to 3). Returns the
 * registration sent and the `auth_tag` the registrar accepted. Throws `KEYLIME_REGISTRAR_REFUSED`
 * (unreachable, or any answer but 200 with `results`), `KEYLIME_BAD_BLOB` (no `blob` in the
 * answer), and the errors of {@link keylimeRegistration} and {@link keylimeAuthTag}.
 */
export async function registerWithKeylime(tpm: Tpm, options: KeylimeRegisterOptions): Promise<{ registration: KeylimeRegistration; authTag: string }> {
  const registration = await keylimeRegistration(tpm, options);
  const base = `${options.registrar.replace(/\/+$/, '')}/v${options.apiVersion ?? KEYLIME_REGISTRAR_API_VERSION}/agents/${registration.uuid}`;
  const registered = await registrarCall('POST', base, registration.body);
  const blob = typeof registered.blob === 'string' ? Buffer.from(registered.blob, 'base64') : undefined;
  if (blob === undefined || blob.length === 0) throw new EnrollError('KEYLIME_BAD_BLOB', `${base}: the registrar answered no blob`, { url: base });
  const authTag = await keylimeAuthTag(tpm, registration, new Uint8Array(blob));
  await registrarCall('PUT', `${base}/activate`, { auth_tag: authTag });
  return { registration, authTag };
}
