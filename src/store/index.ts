/**
 * `imakeep/store`: the LevelDB store of records (as chunks), checkpoints and the removal journal
 * (design.md "Store schema").
 */
export { StoreError, type StoreErrorCode, type StoreErrorDetails } from './errors.js';
export { type KeyRange, META_KEY, MAX_BOOT, chunkKey, formatKey } from './keys.js';
export {
  type Chunk,
  type ChunkDraft,
  type ChunkBounds,
  DEFAULT_CHUNK_BOUNDS,
  ChunkBuilder,
  decodeChunk,
  type ChunkReference,
  type ChunkEntry,
  chunkHash,
  checkChunkBody,
  chunkRecords,
} from './chunk.js';
export {
  type StoreMeta,
  type ListEndianness,
  type BootInfo,
  type BootRecord,
  type ExportMark,
  type PcrValue,
  type Checkpoint,
  type RemovalFlavor,
  type RemovalIntent,
  type KernelHeadFacts,
  type StagedListState,
  type Journal,
  encodeBootRecord,
  decodeBootRecord,
  encodeCheckpoint,
  decodeCheckpoint,
} from './values.js';
export type { BatchOperation, IterateOptions, DatabaseIterator, StoreDatabase } from './database.js';
export { ImaStore, type ImaStoreOptions, type StoredRecord, type StoredChunk, type DropBootOptions } from './store.js';
export { openStore, type OpenStoreOptions, type LevelTuning } from './level.js';
export type { ChunkSegments, SegmentReader } from './segments.js';
export { replayAt } from './replay-at.js';
export {
  chainedNonceV1,
  checkpointNonce,
  checkpointNonceV2,
  bootBinding,
  nextCheckpointNonce,
  adoptDeviceId,
  type QuoteLink,
  type ChainAnchor,
  type NonceInput,
} from './nonce.js';
export {
  BUNDLE_FORMAT,
  BUNDLE_VERSION,
  encodeBundle,
  decodeBundle,
  formatCursor,
  cursorFromText,
  type EvidenceCursor,
  type BundleSegment,
  type EvidenceBundle,
  type DecodedBundle,
} from './bundle.js';
