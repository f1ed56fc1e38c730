/**
 * `imakeep/enroll`: binding a device's AK to its TPM's endorsement key, the way Keylime's
 * registrar does: EK certificate checked against the verifier's CAs, the AK's attributes checked,
 * credential activation proving the AK is on the same TPM as the EK. Pure verifier functions,
 * device functions over a `Tpm`, and the versioned JSON files of the exchange. Depends only on `tpm`.
 */
export { EnrollError, type EnrollErrorCode, type EnrollErrorDetails } from './errors.js';
export type { AkPolicy } from './checks.js';
export { loadCaDirectory } from './ca.js';
export {
  type EnrollChallengeOptions,
  type EnrollRequestOptions,
  answerEnrollChallenge,
  createEnrollRequest,
  finishEnrollment,
  makeEnrollChallenge,
  trustedAkOfEnrollment,
} from './enroll.js';
export {
  encodeEnrollChallenge,
  decodeEnrollChallenge,
  encodeEnrollAnswer,
  decodeEnrollAnswer,
  encodeEnrollPending,
  decodeEnrollPending,
  encodeEnrollmentRecord,
  decodeEnrollmentRecord,
  type AkSpec,
  type EnrollRequest,
  type EnrollChallenge,
  type EnrollAnswer,
  type EnrollPending,
  type EnrollmentRecord,
  encodeEnrollRequest,
  decodeEnrollRequest,
} from './formats.js';
export {
  KEYLIME_REGISTRAR_API_VERSION,
  keylimeRegistration,
  registerWithKeylime,
  type KeylimeRegisterBody,
  type KeylimeRegisterOptions,
  type KeylimeRegistration,
  type KeylimeRegistrationOptions,
} from './keylime.js';
