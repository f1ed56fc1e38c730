/**
 * `imakeep/fleet`: the service devices sync their evidence to. It verifies each device's bundles
 * incrementally from where its verified chain ends, keeps the evidence in PostgreSQL (PGlite
 * embedded, or a server shared by several processes), and answers each accepted bundle with a
 * signed acknowledgement (an IETF RATS EAR token) the device's retention may act on.
 */
export { FleetError, FLEET_ERROR_STATUS, type FleetErrorCode, type FleetErrorDetails } from './errors.js';
export type { SqlDatabase, SqlExecutor, SqlRow, SqlValue } from './sql.js';
export { openPglite } from './pglite.js';
export { openPostgres } from './postgres.js';
export { MIGRATIONS, SCHEMA_VERSION, migrate } from './schema.js';
export {
  MAX_FAILURES,
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
export { acceptBundle, compareCursors, type AcceptedBundle } from './ingest.js';
export { deviceLogStore } from './device-log.js';
export { earStatus, FleetService, type DeviceView, type FleetServiceOptions, type FreshQuoteAnswer, type PushAck } from './service.js';
export { BUNDLE_FRAMES_TYPE, bundleFrames, DEFAULT_FLEET_HTTP_LIMITS, FleetHandler, frameBundle, type FleetAuth, type FleetHttpLimits } from './http.js';
export { DEVICE_ID_PATTERN, FleetEnrollment, tokenHash, type EnrolledDevice, type FleetApproval, type FleetEnrollmentOptions } from './enrollment.js';
export { startFleet, type Fleet, type FleetOptions } from './fleet.js';
