/**
 * `imakeep/ima`: the IMA measurement list, exactly as the kernel shows it. Records and banks, the
 * binary and ASCII codecs (streaming), template fields, per-bank digests, PCR replay of every bank
 * (record by record, from a stream, or from a file with the banks spread over threads),
 * boot_aggregate, and a deterministic synthetic workload generator.
 */
export { BANKS, DIGEST_SIZE, type BankName, type BankMode, type ImaRecord } from './record.js';
export { ImaError, ReplayError, type ImaErrorCode, type ImaErrorWhere } from './errors.js';
export { bankHash, concatBytes, fromHex, toHex, type Endian } from './hash.js';
export {
  BinaryListParser,
  MAX_TEMPLATE_DATA_LEN,
  binaryRecordLength,
  encodeBinaryList,
  encodeBinaryRecord,
  encodeBinaryRecordInto,
  encodedRecordLength,
  listByteOffset,
  parseBinaryList,
  type BinaryListOptions,
  type EncodeOptions,
  type ParsedRecord,
  type RecordVisitor,
  type RecordSpanVisitor,
} from './binary.js';
export {
  AsciiListParser,
  AsciiListWriter,
  formatAsciiLine,
  formatAsciiLineBytes,
  parseAsciiLine,
  parseAsciiList,
  type AsciiOptions,
} from './ascii.js';
export { computeTemplateDigest, extendedDigest, isViolation, templateDigest, templateHashInput } from './digest.js';
export {
  BUILTIN_TEMPLATES,
  FIELD_FORMAT,
  convertTemplateData,
  decodeTemplateFields,
  splitTemplateData,
  templateFields,
  type DecodedTemplate,
  type FieldFormat,
  type FieldId,
  type TemplateField,
} from './template.js';
export {
  PcrReplay,
  replayUntilMatch,
  replayUntilMatchAsync,
  fitsNow,
  replayUntilFits,
  type PcrReplayOptions,
  type ReplayedPcr,
  type ReplayTarget,
  type PcrReplayState,
  type PcrValues,
  type ReplayUntilMatchOptions,
} from './replay.js';
export { bootAggregate } from './boot-aggregate.js';
export { recordBatches, replayList, type ListStreamOptions } from './stream.js';
export { PARALLEL_MIN_BYTES, replayFile, type ReplayFileOptions, type ReplayShare } from './replay-file.js';
