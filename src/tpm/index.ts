/**
 * imakeep's own TPM 2.0 client: the handful of commands attestation needs (PCR_Read, PCR_Extend,
 * PCR_Reset, CreatePrimary, Quote, FlushContext, GetCapability, GetRandom, ReadPublic, Startup; NV_ReadPublic,
 * NV_Read, StartAuthSession, PolicySecret, PolicyOR, ActivateCredential for EKs and credential
 * activation) as data, over swtpm TCP or `/dev/tpmrm0`, plus offline quote verification and
 * MakeCredential with `node:crypto`, and the tpm2-tools PCR and credential file formats. No
 * runtime dependencies (docs/tpm.md).
 */
export type { BankName } from '../base/banks.js';
export {
  type DecodedResponseCode,
  TpmError,
  TpmProtocolError,
  TpmTransportError,
  TpmPcrUnavailableError,
  TpmPcrsUnstableError,
} from './errors.js';
export { TPM_ALG } from './constants.js';
export type { TpmCommand } from './command.js';
export {
  type StartupRequest,
  type GetCapabilityRequest,
  type GetCapabilityResponse,
  type PcrReadRequest,
  type PcrReadResponse,
  type PcrExtendRequest,
  type PcrResetRequest,
  type CreatePrimaryRequest,
  type CreatePrimaryResponse,
  CreatePrimary,
  type ReadPublicRequest,
  type ReadPublicResponse,
  type QuoteRequest,
  type QuoteResponse,
  Quote,
  type FlushContextRequest,
  FlushContext,
  type GetRandomRequest,
} from './commands.js';
export {
  parseTpm2bPublic,
  writeAkTemplate,
  parseQuoteAttest,
  type PcrRef,
  type PcrValue,
  type PcrSelection,
  type SigScheme,
  type TpmPublic,
  type SymmetricDef,
  type AkAlgorithm,
  type TpmSignature,
  TPM_GENERATED_VALUE,
  type ClockInfo,
  type QuoteAttest,
} from './structures.js';
export {
  openTpmTransport,
  type TpmTransport,
  type SwtpmTransportOptions,
  SwtpmTcpTransport,
  TpmDeviceTransport,
  DEFAULT_TPM_DEVICE,
} from './transport.js';
export {
  type TpmOptions,
  type AkHierarchy,
  type AttestationKey,
  type CreateAkOptions,
  type QuoteOptions,
  Tpm,
} from './tpm.js';
export {
  publicKeyFromTpmPublic,
  publicKeyFromTpm2b,
  tpmName,
  parseSignature,
  verifyQuote,
  type QuoteVerifyCode,
  QuoteVerifyError,
  type VerifyQuoteInput,
} from './verify.js';
export { encodePcrBlob, decodePcrBlob, PcrBlobError, type PcrBlob } from './pcr-blob.js';
export { type TpmQuoterOptions, TpmQuoter } from './quoter.js';
export {
  quoteTarget,
  verifySignedQuote,
  type SignedQuote,
  type QuoteWithPcrs,
  type QuoteSource,
  type PcrBinder,
  type QuotedDigest,
} from './quote.js';
export {
  type StartAuthSessionRequest,
  type StartAuthSessionResponse,
  StartAuthSession,
  type PolicySecretRequest,
  type PolicyOrRequest,
  type PolicyStep,
} from './session.js';
export { type NvPublic, type NvReadPublicRequest, type NvReadPublicResponse, type NvReadRequest } from './nv.js';
export {
  ekTemplateOf,
  findEkCertificates,
  readEkChain,
  withEk,
  type EkTemplateName,
  type EkTemplate,
  EK_TEMPLATES,
  type EkCertificate,
  type LoadedEk,
} from './ek.js';
export {
  activateCredential,
  makeCredential,
  encodeCredentialFile,
  decodeCredentialFile,
  newCredentialSecret,
  activationProof,
  type CredentialChallenge,
  type ActivateCredentialRequest,
  ActivateCredential,
  CredentialBlobError,
} from './credential.js';
