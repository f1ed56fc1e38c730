/**
 * `imakeep/verify`: offline verification of evidence bundles, without the device: quote
 * signatures, nonce chain, TPM clock order, replay of every chunk to every checkpoint, chunk chain
 * continuity across chunks, bundles and boots; the first failure reported precisely.
 */
export { VerifyError, type VerifyErrorCode, type VerifyErrorDetails } from './errors.js';
export { chainedNonceV1, checkpointNonce, checkpointNonceV2, bootBinding, type QuoteLink } from '../store/index.js';
export {
  EvidenceVerifier,
  trustedAkFromPem,
  noTrustedAk,
  type BundleReport,
  type SegmentReport,
  type VerifierOptions,
  type VerifyState,
} from './verifier.js';
export { verifyStateFromJson, verifyStateToJson, type VerifyStateJson } from './state.js';
export { verifyLogAgainstQuote, type LogQuote, type LogReport } from './log.js';
export {
  fleetKeyFromPem,
  signEarToken,
  verifyEarToken,
  type DeviceAppraisal,
  type EarStatus,
  type EarToken,
} from './token.js';
