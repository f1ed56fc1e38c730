/**
 * `imakeep/policy`: Keylime runtime policies (format version 1). Load and validate a policy,
 * judge measurement records against it one by one in bounded memory (from any global index),
 * and make a policy from a known-good log. Pure: no I/O but the chunks and bytes the caller passes.
 */
export { PolicyError, type PolicyErrorCode, type PolicyErrorDetails } from './errors.js';
export {
  formatRuntimePolicy,
  loadRuntimePolicy,
  parseRuntimePolicy,
  parseVerificationKeys,
  MAX_DIGESTS_PER_ENTRY,
  MAX_IGNORED_KEYRINGS,
  MAX_KEYS,
  MAX_NAME_LENGTH,
  MAX_POLICY_BYTES,
  MAX_POLICY_ENTRIES,
  POLICY_GENERATOR,
  RUNTIME_POLICY_VERSION,
  type LogHashAlg,
  type RuntimePolicy,
  type RuntimePolicyDocument,
} from './policy.js';
export type { DigestIndex } from './digest-index.js';
export { compileExcludes, translatePythonRegex, MAX_EXCLUDES, MAX_EXCLUDE_LENGTH } from './regex.js';
export {
  checkSignature,
  certificateKeyId,
  hashAlgoSize,
  keyFromBuffer,
  keyIdOf,
  Keyring,
  parseImaSignature,
  verificationKey,
  EVM_IMA_XATTR_DIGSIG,
  EVM_XATTR_PORTABLE_DIGSIG,
  HASH_ALGOS,
  IMA_VERITY_DIGSIG,
  type BufferKey,
  type ImaSignature,
  type SignatureStatus,
  type VerificationKey,
} from './signatures.js';
export {
  PolicyJudge,
  MAX_LEARNED_KEYS,
  REASON_CODES,
  type Finding,
  type JudgeOptions,
  type ReasonCode,
  type Verdict,
  type VerdictSummary,
  type ViolationTreatment,
} from './judge.js';
export { judgeList, type JudgeListOptions } from './stream.js';
export { PolicyBuilder, type PolicyBuilderOptions } from './create.js';
