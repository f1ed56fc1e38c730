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
  type LogHashAlg,
  type RuntimePolicy,
  type RuntimePolicyDocument,
} from './policy.js';
export type { DigestIndex } from './digest-index.js';
export {
  EVM_IMA_XATTR_DIGSIG,
  type BufferKey,
  type ImaSignature,
  type SignatureStatus,
  type VerificationKey,
} from './signatures.js';
export {
  PolicyJudge,
  type Finding,
  type JudgeOptions,
  type ReasonCode,
  type Verdict,
  type VerdictSummary,
  type ViolationTreatment,
} from './judge.js';
export { judgeList, type JudgeListOptions } from './stream.js';
export { PolicyBuilder, type PolicyBuilderOptions } from './create.js';
