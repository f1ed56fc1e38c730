/**
 * The kernel side of imakeep: securityfs probing, the incremental list reader, record removal
 * through the Linux 7.2 interface, errno mapping, and the kernel memory model.
 */
export { KernelError, type KernelErrorCode, type KernelSyscall } from './errors.js';
export { nodeSecurityfsFiles, type OpenMode, type SecurityfsFiles, type SecurityfsStat } from './files.js';
export type { ListFormat } from './layout.js';
export {
  probeSecurityfs,
  type KernelCapabilities,
  type ProbeOptions,
  type RemovalFlavour,
  type WriteOpenCheck,
} from './probe.js';
export {
  MeasurementListReader,
  type DrainOptions,
  type ListBatch,
  type ListBytesBatch,
  type ListPosition,
  type ListReaderOptions,
} from './reader.js';
export {
  deleteStaged,
  removeFirstRecords,
  stageAll,
  type LockedList,
  type RemovalDecision,
  type RemovalResult,
  type RemoveFirstOptions,
  type RequestOptions,
  type RequestResult,
} from './remove.js';
export { retryOnBusy, type BusyRetryPolicy } from './retry.js';
export { X86_64_KMEM, recordKmem, type KmemModel, type RecordKmem } from './kmem.js';
export { readCounter } from './counters.js';
