/**
 * imakeep's own TPM 2.0 client: the handful of commands attestation needs (PCR_Read, PCR_Extend,
 * PCR_Reset, CreatePrimary, Quote, FlushContext, GetCapability, GetRandom, ReadPublic, Startup; NV_ReadPublic,
 * NV_Read, StartAuthSession, PolicySecret, PolicyOR, ActivateCredential for EKs and credential
 * activation) as data, over swtpm TCP or `/dev/tpmrm0`, plus offline quote verification and
 * MakeCredential with `node:crypto`, and the tpm2-tools PCR and credential file formats. No
 * runtime dependencies (docs/tpm.md).
 */
export type { BankName } from '../base/banks.js';
export * from './errors.js';
export { TpmReader, TpmWriter } from './marshal.js';
export { TPM_ALG, TPM_CAP, TPM_CC, TPM_ECC, TPM_PT, TPM_RH, TPM_SE, TPM_ST, TPM_SU, TRANSIENT_FIRST, BANK_ALG, bankOfAlg } from './constants.js';
export { type TpmCommand, encodeCommand, decodeResponse, checkResponseHeader, RESPONSE_HEADER_SIZE } from './command.js';
export * from './commands.js';
export * from './structures.js';
export * from './transport.js';
export * from './tpm.js';
export * from './verify.js';
export * from './pcr-blob.js';
export * from './quoter.js';
export * from './quote.js';
export * from './session.js';
export * from './nv.js';
export * from './ek.js';
export * from './credential.js';
