/**
 * `imakeep/fleet`: the service devices sync their evidence to. It verifies each device's bundles
 * incrementally from where its verified chain ends, keeps the evidence in PostgreSQL (PGlite
 * embedded, or a server shared by several processes), and answers each accepted bundle with a
 * signed acknowledgement (an IETF RATS EAR token) the device's retention may act on.
 */
export { FleetError, type FleetErrorCode, type FleetErrorDetails } from './errors.js';
export type { SqlDatabase, SqlExecutor, SqlRow, SqlValue } from './sql.js';
export { openPglite } from './pglite.js';
export { openPostgres } from './postgres.js';
export {
  openRepository,
  type AckRow,
  type ChunkRow,
  type DeviceEnrollment,
  type DeviceProgress,
  type DeviceRecord,
  type DeviceTransaction,
  type EnrollChallengeRow,
  type Enrollment,
  type FailingRecord,
  type FleetRepository,
  type Verdict,
  type VerdictRow,
} from './repository.js';
export type { AcceptedBundle } from './ingest.js';
export {
  FleetService,
  type DeviceView,
  type FleetServiceOptions,
  type FreshQuoteAnswer,
  type PushAck,
} from './service.js';
export type { FleetAuth, FleetHttpLimits } from './http.js';
export type { EnrolledDevice, FleetApproval, FleetEnrollmentOptions } from './enrollment.js';
export { startFleet, type Fleet, type FleetOptions } from './fleet.js';
