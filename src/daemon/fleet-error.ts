/**
 * The error of the daemon's fleet sync. Apart from the client (`fleet-client.ts`, which loads
 * src/enroll) so that `imakeep/daemon` exports it while `imakeep run` without `--fleet` loads none
 * of the fleet client (src/daemon/daemon.ts `fleetSync`).
 */
import { DetailedError } from '../errors.js';

/** Stable codes of {@link FleetSyncError}. */
export type FleetSyncErrorCode =
  /** The fleet could not be reached, or answered 5xx, 408 or 429 (it is down, its database is, or it is busy): retried with backoff. */
  | 'SYNC_FLEET_UNAVAILABLE'
  /** The fleet refused the evidence with a code (`details.fleetCode`): not retried as is. */
  | 'SYNC_REFUSED'
  /** The fleet refused the device's enrollment (`details.fleetCode`: its CA, an operator's refusal, another TPM on the id). */
  | 'SYNC_ENROLL_REFUSED';

/** What a sync failure concerned. */
export interface FleetSyncErrorDetails {
  readonly fleetCode: string;
  readonly status: number;
  readonly cursor: string;
}

/** The one error class of the device's fleet client. */
export class FleetSyncError extends DetailedError<FleetSyncErrorCode, FleetSyncErrorDetails> {}
