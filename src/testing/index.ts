/**
 * `imakeep/testing`: dev-only. What imakeep's own tests, benches, examples and hardware harnesses
 * share, and a downstream project's tests may use. Nothing in the daemon loads it (except
 * `imakeep run`'s crash seam, and only when `IMAKEEP_TEST_CRASH_AT` is set); it is not part of
 * the API an embedder builds on, and may change in any release.
 */

// The crash-test seam of `imakeep run`.
export { crashHook, parseCrashAt } from './crash.js';

// Workloads: a seeded PRNG and measurement-list generator (records shaped like a device's).
export { ImaWorkload, mulberry32, makeRecord, digestNgField, nameNgField, type WorkloadOptions, type WorkloadTemplate } from '../ima/generate.js';
export { planShares, readFileChunks } from '../ima/replay-file.js';

// TPM wire level: marshalling, commands as data, structures and constants, EK templates and
// policies, NV reads; what tests build raw TPM traffic and stand-in quotes from.
export { AK_ATTRIBUTES, readPcrSelections, writePcrSelections, readPublic, refsOf, selectionOf } from '../tpm/structures.js';
export { GetCapability, GetRandom, PcrExtend, PcrRead, PcrReset, ReadPublic } from '../tpm/commands.js';
export { PolicyOR, emptyPolicy } from '../tpm/session.js';
export { TPM_CAP, TPM_CC, TPM_ECC, TPM_RH, TPM_ST } from '../tpm/constants.js';
export { TpmReader, TpmWriter } from '../tpm/marshal.js';
export { computePcrDigest } from '../tpm/verify.js';
export { createEk, ekPolicyA, ekPolicyB } from '../tpm/ek.js';
export { decodeResponse, encodeCommand } from '../tpm/command.js';
export { decodeResponseCode } from '../tpm/errors.js';
export { nvBufferMax, readNv, splitDer } from '../tpm/nv.js';

// Kernel: file names, errno mapping, the slab model's size classes.
export { FLUSH_HTABLE_OPTION, listFileName, parseListFileName } from '../kernel/layout.js';
export { errnoOf, toKernelError } from '../kernel/errors.js';
export { kmallocSize } from '../kernel/kmem.js';

// Store: its key layout and value codecs (to read or damage a store on purpose), LevelDB options.
export { DEVICE_LEVEL_OPTIONS, SEGMENTS_DIRECTORY } from '../store/level.js';
export { SegmentFiles } from '../store/segments.js';
export { EMPTY_JOURNAL, STORE_SCHEMA_VERSION, decodeJournal, decodeMeta, encodeJournal, encodeMeta } from '../store/values.js';
export { META_KEY, bootKey, checkpointKey, chunkKey, chunkRange, journalKey } from '../store/keys.js';
export { decodeValue, encodeValue } from '../store/cbor.js';
export { decodeChunkEntry, encodeChunk, encodeChunkReference } from '../store/chunk.js';

// White-box seams of the upper layers.
export { KEYLIME_API_VERSION } from '../serve/keylime.js';
export { V1_UNSIGNED_FIELDS, V2_UNSIGNED_FIELDS } from '../verify/verifier.js';
export { clockOrderViolation } from '../verify/chain.js';
export { MAX_DIGESTS_PER_ENTRY, MAX_POLICY_BYTES } from '../policy/policy.js';
export { compileExcludes } from '../policy/regex.js';
export { keyIdOf, parseImaSignature } from '../policy/signatures.js';
export { addPoints, curveByName, multiply, nodePublicPoint } from '../policy/ecdsa.js';
export { SCHEMA_VERSION, migrate } from '../fleet/schema.js';
export { BUNDLE_FRAMES_TYPE, FleetHandler, frameBundle } from '../fleet/http.js';
export { checkEkMatchesCertificate } from '../enroll/checks.js';
export { collectorTail } from '../daemon/tail.js';
export { backoffDelay } from '../daemon/backoff.js';
export { FleetSync, FRESH_PCR } from '../daemon/fleet-sync.js';
