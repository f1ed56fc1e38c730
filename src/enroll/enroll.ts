/**
 * The enrollment exchange, after Keylime's registrar (keylime/registrar: register, then activate)
 * and TCG's EK-based enrollment: four steps, each a function, so that the verifier's two can run
 * days apart from the device's (a device that is offline answers when it next syncs).
 *
 * 1. `createEnrollRequest` (device, TPM): EK certificate and public, AK public and Name.
 * 2. `makeEnrollChallenge` (verifier, pure): checks the AK's attributes, the EK certificate's
 *    chain and that the EK is its key, then makes a credential for the AK's Name under the EK.
 * 3. `answerEnrollChallenge` (device, TPM): ActivateCredential with the same EK and AK; the proof
 *    is an HMAC of the device id keyed by the secret.
 * 4. `finishEnrollment` (verifier, pure): checks the proof and writes the enrollment record.
 */
import { type KeyObject, type X509Certificate, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  type CreateAkOptions,
  EK_TEMPLATES,
  type EkTemplateName,
  type Tpm,
  TpmError,
  activateCredential,
  activationProof,
  decodeCredentialFile,
  encodeCredentialFile,
  findEkCertificates,
  makeCredential,
  newCredentialSecret,
  parseTpm2bPublic,
  publicKeyFromTpmPublic,
  readEkChain,
  tpmName,
  withEk,
} from '../tpm/index.js';
import { type AkPolicy, checkAkPublic, checkEkMatchesCertificate, verifyEkCertificateChain } from './checks.js';
import { EnrollError } from './errors.js';
import type { AkSpec, EnrollAnswer, EnrollChallenge, EnrollPending, EnrollRequest, EnrollmentRecord } from './formats.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Options of {@link createEnrollRequest}. */
export interface EnrollRequestOptions {
  readonly deviceId: string;
  readonly kernelBootId: string;
  /** The EK to enroll; default the first the TPM has a certificate for (L-1, L-2, H-1, ... order). */
  readonly ekTemplate?: EkTemplateName;
  /** The AK, as the device's quoter creates it (default ECC in the endorsement hierarchy). */
  readonly ak?: CreateAkOptions;
  readonly now?: Date;
}

const akSpecOf = (ak: CreateAkOptions = {}): AkSpec => ({ alg: ak.alg ?? 'ecc', hierarchy: ak.hierarchy ?? 'endorsement' });

/**
 * Device side: reads the EK certificate (and chain) from NV, recreates that EK and the AK, and
 * returns the request. Throws `ENROLL_EK_CERT_MISSING` when the TPM holds no EK certificate (for
 * the template asked for).
 * @example
 * ```ts
 * const request = await createEnrollRequest(tpm, { deviceId: 'gw-0042', kernelBootId, ak: { alg: 'ecc' } });
 * await writeFile('request.json', encodeEnrollRequest(request));
 * ```
 * @throws {ENROLL_EK_CERT_MISSING} the TPM has no EK certificate (for `ekTemplate`) in its NV
 */
export async function createEnrollRequest(tpm: Tpm, options: EnrollRequestOptions): Promise<EnrollRequest> {
  const certificates = await findEkCertificates(tpm);
  const found = options.ekTemplate === undefined ? certificates[0] : certificates.find((c) => c.template.name === options.ekTemplate);
  if (found === undefined) {
    const have = certificates.map((c) => c.template.name).join(', ') || 'none';
    throw new EnrollError('ENROLL_EK_CERT_MISSING', `the TPM holds no EK certificate${options.ekTemplate === undefined ? '' : ` for ${options.ekTemplate}`} (has: ${have})`, {
      template: options.ekTemplate ?? '',
    });
  }
  const ekChain = await readEkChain(tpm);
  const ekPublic = await withEk(tpm, found.template, async (ek) => ek.public);
  const ak = akSpecOf(options.ak);
  const { akPublic, akName } = await tpm.withAk(ak, async (key) => ({ akPublic: key.public, akName: key.name }));
  return {
    deviceId: options.deviceId,
    kernelBootId: options.kernelBootId,
    createdAt: (options.now ?? new Date()).toISOString(),
    ekTemplate: found.template.name,
    ekPublic,
    ekCertificate: found.certificate,
    ekChain,
    akPublic,
    akName,
    ak,
  };
}

/** Options of {@link makeEnrollChallenge}. */
export interface EnrollChallengeOptions {
  /** The CA certificates the verifier trusts (`loadCaDirectory`). */
  readonly anchors: readonly X509Certificate[];
  readonly now?: Date;
  /** How long the device has to answer; default 30 days (offline devices answer when they next sync). */
  readonly validForMs?: number;
  readonly akPolicy?: AkPolicy;
}

/** Default time a challenge stays answerable. */
export const DEFAULT_CHALLENGE_VALIDITY_MS = 30 * 24 * 3600 * 1000;

/**
 * Verifier side, pure: checks the request (AK attributes and Name, EK certificate chain at `now`,
 * the EK from its template and equal to the certificate's key) before making anything, then makes
 * the credential. Returns the challenge for the device and the pending state to keep (secret).
 * Throws `ENROLL_AK_ATTRIBUTES`, `ENROLL_EK_CERT_CHAIN`, `ENROLL_EK_MISMATCH` or `ENROLL_BAD_FILE`.
 * @example
 * ```ts
 * const { challenge, pending } = makeEnrollChallenge(request, { anchors: await loadCaDirectory('/etc/imakeep/ek-ca') });
 * ```
 * @throws {ENROLL_AK_ATTRIBUTES} the AK is not a restricted signing key with fixedTPM and fixedParent
 * @throws {ENROLL_EK_CERT_CHAIN} the EK certificate does not chain to `anchors`
 * @throws {ENROLL_EK_MISMATCH} the EK public key is not the certificate's
 */
export function makeEnrollChallenge(request: EnrollRequest, options: EnrollChallengeOptions): { challenge: EnrollChallenge; pending: EnrollPending } {
  const now = options.now ?? new Date();
  checkAkPublic(request.akPublic, request.akName, options.akPolicy);
  const path = verifyEkCertificateChain(request.ekCertificate, request.ekChain, options.anchors, now);
  const [leaf] = path;
  if (leaf === undefined) throw new EnrollError('ENROLL_EK_CERT_CHAIN', 'empty certificate path', { reason: 'no-issuer' });
  const { ek } = checkEkMatchesCertificate(request.ekPublic, leaf, request.ekTemplate);
  const secret = newCredentialSecret();
  const credential = encodeCredentialFile(makeCredential(ek, request.akName, secret));
  const challengeId = randomBytes(16).toString('hex');
  const createdAt = now.toISOString();
  const expiresAt = new Date(now.getTime() + (options.validForMs ?? DEFAULT_CHALLENGE_VALIDITY_MS)).toISOString();
  return {
    challenge: { challengeId, deviceId: request.deviceId, ekTemplate: request.ekTemplate, akName: request.akName, ak: request.ak, credential, createdAt, expiresAt },
    pending: {
      challengeId,
      key: Buffer.from(secret).toString('base64'),
      request,
      ekCertificatePath: path.slice(1).map((c) => new Uint8Array(c.raw)),
      createdAt,
      expiresAt,
    },
  };
}

/**
 * Device side: recreates the challenged EK and AK and activates the credential. Throws
 * `ENROLL_AK_CHANGED` when the AK's Name differs from the challenged one (another TPM, or another
 * AK template), `ENROLL_ACTIVATION_FAILED` (with the TPM's error as cause) when the TPM refuses
 * the credential: it was made for another EK or another Name.
 * @example
 * ```ts
 * const answer = await answerEnrollChallenge(tpm, decodeEnrollChallenge(await readFile('challenge.json', 'utf8')));
 * ```
 * @throws {ENROLL_BAD_FILE} the challenge names an unknown EK template or its credential does not decode
 * @throws {ENROLL_AK_CHANGED} the TPM's AK is not the one the request named
 * @throws {ENROLL_ACTIVATION_FAILED} the TPM refuses to activate the credential (another TPM, another EK)
 */
export async function answerEnrollChallenge(tpm: Tpm, challenge: EnrollChallenge): Promise<EnrollAnswer> {
  const template = EK_TEMPLATES.get(challenge.ekTemplate);
  if (template === undefined) throw new EnrollError('ENROLL_BAD_FILE', `unknown EK template ${challenge.ekTemplate}`, { field: 'ek_template' });
  const credential = decodeCredentialFile(challenge.credential);
  const secret = await withEk(tpm, template, (ek) =>
    tpm.withAk(challenge.ak, async (ak) => {
      if (hex(ak.name) !== hex(challenge.akName)) {
        throw new EnrollError('ENROLL_AK_CHANGED', 'this TPM\'s AK is not the one the challenge was made for', {
          challengeId: challenge.challengeId,
          expected: hex(challenge.akName),
          actual: hex(ak.name),
        });
      }
      try {
        return await activateCredential(tpm, ek, ak.handle, credential);
      } catch (e) {
        if (!(e instanceof TpmError)) throw e;
        throw new EnrollError('ENROLL_ACTIVATION_FAILED', `the TPM refused the credential (${e.code}): it was made for another EK or AK`, {
          challengeId: challenge.challengeId,
          deviceId: challenge.deviceId,
        }, { cause: e });
      }
    }),
  );
  return { challengeId: challenge.challengeId, deviceId: challenge.deviceId, authTag: activationProof(secret, challenge.deviceId) };
}

/**
 * Verifier side, pure: checks that `answer` answers `pending` in time, for the same device, with
 * the proof only the activated secret gives, and returns the enrollment record. Throws
 * `ENROLL_UNKNOWN_CHALLENGE`, `ENROLL_CHALLENGE_EXPIRED` or `ENROLL_ACTIVATION_FAILED`.
 * @example
 * ```ts
 * const enrollment = finishEnrollment(pending, answer);   // enrollment.akPublic: the AK to trust
 * ```
 * @throws {ENROLL_UNKNOWN_CHALLENGE} the answer is not to this pending challenge
 * @throws {ENROLL_CHALLENGE_EXPIRED} the challenge is past its validity
 * @throws {ENROLL_ACTIVATION_FAILED} the answered secret is not the challenge's
 */
export function finishEnrollment(pending: EnrollPending, answer: EnrollAnswer, now: Date = new Date()): EnrollmentRecord {
  const { request } = pending;
  if (answer.challengeId !== pending.challengeId || answer.deviceId !== request.deviceId) {
    throw new EnrollError('ENROLL_UNKNOWN_CHALLENGE', `the answer (challenge ${answer.challengeId}, device ${answer.deviceId}) does not answer challenge ${pending.challengeId} of device ${request.deviceId}`, {
      challengeId: answer.challengeId,
      deviceId: answer.deviceId,
    });
  }
  if (now > new Date(pending.expiresAt)) {
    throw new EnrollError('ENROLL_CHALLENGE_EXPIRED', `challenge ${pending.challengeId} expired at ${pending.expiresAt}`, {
      challengeId: pending.challengeId,
      expiresAt: pending.expiresAt,
    });
  }
  const expected = Buffer.from(activationProof(new Uint8Array(Buffer.from(pending.key, 'base64')), request.deviceId), 'hex');
  const given = Buffer.from(answer.authTag, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new EnrollError('ENROLL_ACTIVATION_FAILED', `the proof for challenge ${pending.challengeId} is wrong: the device did not activate the credential`, {
      challengeId: pending.challengeId,
      deviceId: request.deviceId,
    });
  }
  return {
    deviceId: request.deviceId,
    kernelBootId: request.kernelBootId,
    enrolledAt: now.toISOString(),
    challengeId: pending.challengeId,
    ekTemplate: request.ekTemplate,
    ekPublic: request.ekPublic,
    ekName: tpmName(parseTpm2bPublic(request.ekPublic)),
    ekCertificate: request.ekCertificate,
    ekCertificatePath: pending.ekCertificatePath,
    akPublic: request.akPublic,
    akName: request.akName,
    ak: request.ak,
  };
}

/**
 * The AK an enrollment record trusts, as a KeyObject for `EvidenceVerifier`'s `trustedAk`, after
 * checking again that it is a restricted signing key whose Name the record holds.
 */
export function trustedAkOfEnrollment(record: EnrollmentRecord, policy?: AkPolicy): KeyObject {
  return publicKeyFromTpmPublic(checkAkPublic(record.akPublic, record.akName, policy));
}
