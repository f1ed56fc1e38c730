/**
 * `imakeep/serve`: the whole log in the kernel's formats from any global index (stored part plus
 * kernel tail), a Keylime-compatible quote endpoint, evidence bundles for devices that sync later,
 * status and metrics, over a unix socket or loopback/TLS TCP (design.md "Serving").
 */
export { ServeError, type ServeErrorCode, type ServeErrorDetails } from './errors.js';
export type { KernelTail, MetricSample, StatusSource, TailBatch } from './sources.js';
export {
  logCount,
  openLog,
  type IndexedBatch,
  type LogFormat,
  type LogQuery,
  type LogSource,
  type LogStore,
  type OpenLog,
} from './log-stream.js';
// The bundle codec lives in the store (below serve and verify); exported here too for builders.
export {
  BUNDLE_FORMAT,
  BUNDLE_VERSION,
  decodeBundle,
  encodeBundle,
  formatCursor,
  type BundleSegment,
  type EvidenceBundle,
  type EvidenceCursor,
} from '../store/index.js';
export { buildBundle, parseCursor, DEFAULT_BUNDLE_LIMITS, type BuiltBundle, type BundleLimits } from './evidence.js';
export type { KeylimeOptions } from './keylime.js';
export { openPayloadKey } from './keylime-key.js';
export { formatPrometheus, PROMETHEUS_CONTENT_TYPE } from './metrics.js';
export { openLogQuery, Query, type ApiOptions, type ClosableIterator } from './http.js';
export {
  startApiServer,
  startHttpServer,
  isLoopback,
  type ApiServer,
  type BoundServer,
  type BindAddress,
  type ListenAddress,
  type ServerTlsFiles,
  type ServerLimits,
  type TlsFiles,
} from './server.js';
export { bootSummaries, type BootSummary } from './boot-summary.js';
