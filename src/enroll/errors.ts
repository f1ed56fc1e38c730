/**
 * Typed enrollment failures. Every code is stable (README "Errors"); the data to act on rides on
 * the error (which certificate, which attribute, which device and challenge).
 */
import { DetailedError } from '../errors.js';

/** Stable codes of {@link EnrollError}. */
export type EnrollErrorCode =
  /** The EK certificate does not chain to a trusted CA: no issuer found, a bad signature, or a certificate outside its validity. */
  | 'ENROLL_EK_CERT_CHAIN'
  /** The TPM holds no EK certificate (for the template asked for). */
  | 'ENROLL_EK_CERT_MISSING'
  /** The EK in the request is not the key its certificate certifies, or not made from a TCG EK template. */
  | 'ENROLL_EK_MISMATCH'
  /** The AK's public area is not a restricted signing key bound to the TPM, or has an unexpected name algorithm or scheme. */
  | 'ENROLL_AK_ATTRIBUTES'
  /** The TPM could not activate the credential, or the proof returned does not match the secret. */
  | 'ENROLL_ACTIVATION_FAILED'
  /** The AK the device has now is not the one the challenge was made for. */
  | 'ENROLL_AK_CHANGED'
  /** The challenge is past its `expiresAt`. */
  | 'ENROLL_CHALLENGE_EXPIRED'
  /** No pending challenge for this answer (already finished, or made by another verifier), or it names another device. */
  | 'ENROLL_UNKNOWN_CHALLENGE'
  /** A request, challenge, answer, pending state or enrollment file that does not decode or has the wrong type or version. */
  | 'ENROLL_BAD_FILE'
  /** A Keylime agent id that is not letters, digits, `_`, `.` and `-` (keylime `valid_agent_id`). */
  | 'KEYLIME_BAD_UUID'
  /** The Keylime registrar could not be reached, or answered anything but 200 with `results`. */
  | 'KEYLIME_REGISTRAR_REFUSED'
  /** The Keylime registrar accepted the registration but answered no credential `blob`. */
  | 'KEYLIME_BAD_BLOB';

/** Data attached to an enrollment error, all optional. */
export interface EnrollErrorDetails {
  readonly deviceId: string;
  readonly challengeId: string;
  /** EK template name (`L-1`, `H-3`, ...). */
  readonly template: string;
  /** Subject of the certificate the check stopped at (ENROLL_EK_CERT_CHAIN). */
  readonly subject: string;
  /** Issuer of that certificate. */
  readonly issuer: string;
  /** Why the chain failed: `no-issuer`, `not-yet-valid`, `expired`, `too-long`, `unparsable`. */
  readonly reason: string;
  /** TPMA_OBJECT of the AK (ENROLL_AK_ATTRIBUTES). */
  readonly attributes: number;
  /** Attributes an AK must have but lacks, and ones it must not have but has (names as in Part 2 §8.3). */
  readonly missing: readonly string[];
  readonly forbidden: readonly string[];
  /** Other problems of the AK's public area: name algorithm, scheme, key type. */
  readonly problems: readonly string[];
  /** The expected and actual value of a compared field (AK Name, ...), hex. */
  readonly expected: string;
  readonly actual: string;
  /** The file or field that did not decode (ENROLL_BAD_FILE). */
  readonly field: string;
  /** When the challenge expired (ISO 8601). */
  readonly expiresAt: string;
  /** The registrar URL of a Keylime request, and the HTTP status it answered. */
  readonly url: string;
  readonly httpStatus: number;
}

/** The one error class of `src/enroll`; switch on `code`. */
export class EnrollError extends DetailedError<EnrollErrorCode, EnrollErrorDetails> {}
