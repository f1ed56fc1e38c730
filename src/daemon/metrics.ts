/**
 * What the daemon publishes about itself: the collector's status and the process's memory, as the
 * JSON of `GET /v1/status` and the samples of `GET /metrics` (Prometheus text format 0.0.4).
 */
import { RECOVERY_PAUSE_REASONS, type CollectorStatus } from '../collector/index.js';
import type { MetricSample, StatusSource } from '../serve/index.js';
import type { FleetSyncStatus } from './fleet-sync.js';

/** Prometheus samples of a collector status. */
export function statusSamples(s: CollectorStatus): MetricSample[] {
  const m = s.metrics;
  const g = (name: string, help: string, value: number, labels?: Record<string, string>): MetricSample => ({ name, help, type: 'gauge', value, labels });
  const c = (name: string, help: string, value: number, labels?: Record<string, string>): MetricSample => ({ name, help, type: 'counter', value, labels });
  return [
    c('imakeep_records_stored_total', 'Records committed to the store since start.', m.recordsStored),
    c('imakeep_records_removed_total', 'Records removed from the kernel since start.', m.recordsRemoved),
    c('imakeep_bytes_stored_total', 'Record bytes committed to the store since start.', m.bytesStored),
    c('imakeep_cycles_total', 'Collector cycles run.', m.cycles),
    c('imakeep_checkpoints_total', 'Checkpoints stored since start.', m.checkpoints),
    g('imakeep_kernel_records', 'Records the kernel holds (as of the last drain).', s.kernelRecords),
    g('imakeep_kernel_bytes_model', 'Modeled kernel memory of those records.', s.kernelBytesModel),
    g('imakeep_removed_records', 'T: records of the current boot removed from the kernel.', s.removed),
    g('imakeep_last_checkpoint_records', 'Records covered by the last checkpoint.', s.lastCheckpoint?.count ?? 0),
    ...(['p50', 'p99', 'max'] as const).map((q) => g('imakeep_writer_lock_hold_ms', 'Writer-lock hold time per kernel write.', m.writerLockHoldMs[q], { quantile: q })),
    ...(['p50', 'p99', 'max'] as const).map((q) => g('imakeep_cycle_ms', 'Cycle duration.', m.cycleMs[q], { quantile: q })),
    ...Object.entries(m.errors).map(([code, n]) => c('imakeep_errors_total', 'Cycle failures by error code.', n, { code })),
    ...RECOVERY_PAUSE_REASONS.map((reason) =>
      g('imakeep_removal_paused', 'A pending removal left undecided (1): removal and the kernel part of the log wait, by reason.', s.recovery?.reason === reason ? 1 : 0, { reason }),
    ),
  ];
}

/** The daemon process's own memory (`process.memoryUsage()`), for `/v1/status` and `/metrics`. */
function processMemory(): Readonly<Record<string, number>> {
  const m = process.memoryUsage();
  return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, heapTotalBytes: m.heapTotal, externalBytes: m.external };
}

/** Prometheus samples of the daemon's memory (Invariant 4 is watched from outside through these). */
function processSamples(memory: Readonly<Record<string, number>>): MetricSample[] {
  return [
    { name: 'imakeep_process_resident_bytes', help: 'Resident set size of the daemon.', type: 'gauge', value: memory.rssBytes ?? 0 },
    { name: 'imakeep_process_heap_used_bytes', help: 'V8 heap in use.', type: 'gauge', value: memory.heapUsedBytes ?? 0 },
  ];
}

/** Prometheus samples of the fleet sync (`imakeep run --fleet`). */
function fleetSamples(f: FleetSyncStatus): MetricSample[] {
  return [
    { name: 'imakeep_fleet_enrolled', help: 'The device holds an approved enrollment with the fleet (1) or not yet (0).', type: 'gauge', value: f.enrollment === 'approved' ? 1 : 0 },
    { name: 'imakeep_fleet_reachable', help: 'The last sync round reached the fleet (0 while backing off).', type: 'gauge', value: f.state === 'backing-off' || f.state === 'starting' ? 0 : 1 },
    { name: 'imakeep_fleet_bundles_acknowledged_total', help: 'Evidence bundles the fleet acknowledged since start.', type: 'counter', value: f.bundlesAcknowledged },
    { name: 'imakeep_fleet_records_acknowledged_total', help: 'Records the fleet verified and acknowledged since start.', type: 'counter', value: f.recordsAcknowledged },
    { name: 'imakeep_fleet_boots_dropped_total', help: 'Finished boots retention dropped after the fleet acknowledged them whole.', type: 'counter', value: f.bootsDropped },
    { name: 'imakeep_fleet_sync_failures', help: 'Sync rounds failed in a row.', type: 'gauge', value: f.failures },
    ...Object.entries(f.errors).map(([code, n]): MetricSample => ({ name: 'imakeep_fleet_sync_errors_total', help: 'Failed sync rounds by error code.', type: 'counter', value: n, labels: { code } })),
  ];
}

/** Status and metrics of a daemon around `status` (the collector's) and `fleet` (its sync, if any), for the API server. */
export function daemonStatus(status: () => CollectorStatus, fleet?: () => FleetSyncStatus): StatusSource {
  return {
    status: async () => ({ ...status(), process: processMemory(), ...(fleet === undefined ? {} : { fleet: fleet() }) }),
    metrics: async () => [...statusSamples(status()), ...processSamples(processMemory()), ...(fleet === undefined ? [] : fleetSamples(fleet()))],
  };
}
