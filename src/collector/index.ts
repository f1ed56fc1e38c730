/**
 * `imakeep/collector`: the daemon's engine (design.md "The cycle"): drains the kernel's list into
 * chunks, quotes PCR 10, matches the quote to the stored records, stores checkpoints and removes
 * covered records through the Linux 7.2 interface, crash-safe and in bounded memory.
 */
export { CollectorError, type CollectorErrorCode, type CollectorErrorDetails } from './errors.js';
export {
  COLLECTOR_DEFAULTS,
  COLLECTOR_STEPS,
  chooseFlavor,
  type CollectorHooks,
  type CollectorOptions,
  type CollectorStep,
  type Flavor,
  type FlavorChoice,
} from './config.js';
export { SAMPLE_WINDOW, Timing, type MetricsSnapshot, type TimingSummary } from './metrics.js';
export {
  RECOVERY_PAUSE_REASONS,
  decideByHeadFacts,
  judgeRemoval,
  recordIdentity,
  resolveJournal,
  sameRecord,
  type JournalAction,
  type JournalResolution,
  type RecoveryKernelReads,
  type RecoveryPauseReason,
  type RecoveryReads,
  type RemovalEvidence,
  type RemovalJudgement,
} from './recovery.js';
export {
  kernelSegments,
  kernelTail,
  openKernelTail,
  runningKernelTail,
  type KernelLayout,
  type KernelReadOptions,
  type KernelSegment,
  type KernelTailFiles,
  type StandaloneKernelTail,
} from './kernel-log.js';
export { storedBytes } from './stored.js';
export { Collector } from './collector.js';
export { DEFAULT_BOOT_ID_PATH } from './segments.js';
export { type CollectorCondition, type CollectorStatus, type RecoveryPause, type CycleReport } from './status.js';
