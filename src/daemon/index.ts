/**
 * `imakeep/daemon`: the running daemon, assembled. `startDaemon` owns the TPM connection and AK,
 * the store, the collector and its schedule, and the HTTP API with status and metrics; the rest is
 * what a service around it needs: how to start the process on a small device, where its socket
 * and status file are, and how a client reaches its API.
 */
export {
  startDaemon,
  type Daemon,
  type DaemonApiOptions,
  type DaemonCollectorOptions,
  type DaemonFleetOptions,
  type DaemonOptions,
} from './daemon.js';
// The fleet client itself (fleet-client.ts, fleet-sync.ts) is loaded by `startDaemon` only with a fleet.
export { DEFAULT_BACKOFF, type Backoff } from './backoff.js';
export type { FleetSyncStatus, SyncRound } from './fleet-sync.js';
export { FleetSyncError, type FleetSyncErrorCode, type FleetSyncErrorDetails } from './fleet-error.js';
export { DAEMON_MALLOC_ENV, DAEMON_NODE_FLAGS, daemonPaths, missingDaemonEnv, type DaemonPaths } from './process.js';
export { DaemonApiError, daemonGet } from './client.js';
