/**
 * `imakeep/store`: the LevelDB store of records (as chunks), checkpoints and the removal journal
 * (design.md "Store schema").
 */
export { StoreError, type StoreErrorCode, type StoreErrorDetails } from './errors.js';
export { encodeValue, decodeValue, MAX_VALUE_BYTES } from './cbor.js';
export { FieldReader } from './shape.js';
export {
  type KeyRange,
  META_KEY,
  MAX_BOOT,
  bootKey,
  chunkKey,
  checkpointKey,
  journalKey,
  bootRange,
  chunkRange,
  checkpointRange,
  bootOfKey,
  indexOfKey,
  formatKey,
} from './keys.js';
export {
  type Chunk,
  type ChunkDraft,
  type ChunkBounds,
  DEFAULT_CHUNK_BOUNDS,
  CHUNK_HASH_SIZE,
  ChunkBuilder,
  encodeChunk,
  decodeChunk,
  type ChunkReference,
  type ChunkEntry,
  encodeChunkReference,
  decodeChunkEntry,
  chunkHash,
  checkChunkBody,
  chunkRecords,
  replayStateValue,
  decodeReplayState,
} from './chunk.js';
export {
  STORE_SCHEMA_VERSION,
  EMPTY_JOURNAL,
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
  encodeMeta,
  decodeMeta,
  encodeBootRecord,
  decodeBootRecord,
  bootInfoValue,
  encodeCheckpoint,
  decodeCheckpoint,
  encodeJournal,
  decodeJournal,
} from './values.js';
export type { BatchOperation, IterateOptions, DatabaseIterator, StoreDatabase } from './database.js';
export { ImaStore, type ImaStoreOptions, type StoredRecord, type StoredChunk, type DropBootOptions } from './store.js';
export { openStore, type OpenStoreOptions, type LevelTuning, DEVICE_LEVEL_OPTIONS, SEGMENTS_DIRECTORY } from './level.js';
export { type ChunkSegments, type SegmentReader, SegmentFiles } from './segments.js';
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
