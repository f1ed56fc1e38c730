/**
 * `imakeep/daemon`: the running daemon, assembled. `startDaemon` owns the TPM connection and AK,
 * the store, the collector and its schedule, and the HTTP API with status and metrics; the rest is
 * what a service around it needs: how to start the process on a small device, where its socket
 * and status file are, and how a client reaches its API.
 */
export { startDaemon, type Daemon, type DaemonApiOptions, type DaemonCollectorOptions, type DaemonFleetOptions, type DaemonOptions } from './daemon.js';
export { backoffDelay, DEFAULT_BACKOFF, FleetSync, FRESH_PCR, type Backoff, type FleetSyncOptions, type FleetSyncStatus, type FreshQuote, type SyncRound } from './fleet-sync.js';
export {
  FleetEnroller,
  FleetSyncError,
  fleetCall,
  type DeviceEnrollmentState,
  type FleetAnswer,
  type FleetEndpoint,
  type FleetEnrollerOptions,
  type FleetRequest,
  type FleetSyncErrorCode,
  type FleetSyncErrorDetails,
} from './fleet-client.js';
export { DAEMON_MALLOC_ENV, DAEMON_NODE_FLAGS, daemonPaths, missingDaemonEnv, type DaemonPaths } from './process.js';
export { DaemonApiError, daemonGet } from './client.js';
export { collectorTail } from './tail.js';
