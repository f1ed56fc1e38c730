/**
 * The Linux 7.2 securityfs emulator (test and demo component, not published): mount it, feed it
 * records like a kernel, read and write its files exactly as on a device.
 */
export { EmulatorBuildError, securityfsDaemonPath } from './build.js';
export {
  EmulatorError,
  startSecurityfsEmulator,
  unmountStale,
  type AppendResult,
  type EmulatorControlPaths,
  type EmulatorErrorCode,
  type EmulatorStats,
  type SecurityfsEmulator,
  type SecurityfsEmulatorOptions,
} from './emulator.js';
export { encodeFrame, type FrameLayout } from './frame.js';
export { captureForTpm, readCapture, tpmBootAggregate, withBootAggregate } from './sources.js';
export { runSimulation, type SimulationOptions } from './simulate.js';
