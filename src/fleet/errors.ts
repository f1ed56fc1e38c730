/**
 * Typed failures of the fleet service. Each code maps to one HTTP status (`httpStatus`), so the
 * request handler never guesses; a refused bundle's details name where the evidence went wrong
 * (boot, global index, checkpoint) and the cursor the fleet's verified evidence ends at, so an
 * honest device knows where to resume.
 */
import { DetailedError } from '../errors.js';

/** Stable codes of {@link FleetError}, with the HTTP status each answers with. */
export const FLEET_ERROR_STATUS = {
  /** No device with that id is known to the fleet (enroll it first). */
  FLEET_UNKNOWN_DEVICE: 404,
  /** The device is not approved (pending or refused by an operator); its evidence is not accepted. */
  FLEET_NOT_ENROLLED: 403,
  /** The bundle is not under the AK the device proved at enrollment, or a checkpoint names another AK. */
  FLEET_WRONG_AK: 403,
  /** The bundle starts after where the device's verified evidence ends: records missing, or bundles out of order. */
  FLEET_GAP: 409,
  /** The bundle repeats evidence the fleet already holds, byte for byte (nothing is counted twice). */
  FLEET_REPLAYED: 409,
  /** The bundle gives other bytes for positions the fleet already verified: a second history of the same device. */
  FLEET_FORK: 409,
  /** A checkpoint's TPM clock, resetCount or restartCount is behind the device's last verified checkpoint. */
  FLEET_ROLLBACK: 409,
  /** A checkpoint's quote signature or nonce chain does not verify: the evidence is not what the TPM signed. */
  FLEET_FORGED: 422,
  /** The records do not replay to the quoted or stored PCR values: records hidden, added or altered. */
  FLEET_LOG_MISMATCH: 422,
  /** The body is not a sequence of evidence bundles, or one does not decode. */
  FLEET_BUNDLE_CORRUPT: 400,
  /** One bundle of the body is larger than the fleet accepts. */
  FLEET_BUNDLE_TOO_LARGE: 413,
  /** A freshness quote does not answer the fleet's nonce or does not verify with the device's AK. */
  FLEET_STALE_QUOTE: 422,
  /** Self-enrollment is off: the fleet was started without a CA directory (`--ca`). */
  FLEET_ENROLL_DISABLED: 403,
  /** The device id is enrolled with another TPM's EK certificate. */
  FLEET_ENROLL_CONFLICT: 409,
  /** The request lacks the bearer token of the device (or of the operator) its route needs, or gives a wrong one. */
  FLEET_UNAUTHORIZED: 401,
  /** A JSON body (enrollment, quote answer, approval) is larger than the fleet reads. */
  FLEET_BODY_TOO_LARGE: 413,
  /** The database's schema is newer than this imakeep, or a migration failed. */
  FLEET_SCHEMA: 500,
  /** The database could not be reached or refused a statement. */
  FLEET_STORAGE: 503,
} as const;

/** Stable codes of {@link FleetError}. */
export type FleetErrorCode = keyof typeof FLEET_ERROR_STATUS;

/** What a caller needs to act on a fleet failure, all optional. */
export interface FleetErrorDetails {
  readonly deviceId: string;
  /** The verification check that failed (`src/verify` check names), or the fleet's own. */
  readonly check: string;
  /** Store boot number concerned. */
  readonly boot: number;
  /** Global record index concerned. */
  readonly index: number;
  /** Record count of the checkpoint concerned. */
  readonly checkpoint: number;
  /** The cursor the device's verified evidence ends at on the fleet: where an honest device resumes. */
  readonly cursor: string;
  /** The cursor the refused bundle started at. */
  readonly got: string;
  /** Code of the underlying error (VERIFY_*, STORE_*, a database SQLSTATE). */
  readonly causeCode: string;
  /** Bundle number in the request body (0-based) for a multi-bundle push. */
  readonly bundle: number;
}

/** The one error class of `src/fleet`; switch on `code`. */
export class FleetError extends DetailedError<FleetErrorCode, FleetErrorDetails> {
  /** The HTTP status this error answers with. */
  get httpStatus(): number {
    return FLEET_ERROR_STATUS[this.code];
  }
}
