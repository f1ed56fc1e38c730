/**
 * Errors of the runtime policy: a policy that does not load (bad JSON, a schema violation, a
 * version this code does not read, an exclude that is no regular expression or one that cannot
 * be carried over from Python's `re`, absurd sizes, a verification key that does not decode).
 * Judging records never throws these: a record that fails the policy is a finding of the verdict.
 */
import { DetailedError } from '../errors.js';

/** Stable codes of {@link PolicyError}. */
export type PolicyErrorCode =
  /** The policy is not JSON (or a DSSE envelope whose payload is not base64 JSON). */
  | 'POLICY_BAD_JSON'
  /** A field is missing or has the wrong type or value (Keylime's RUNTIME_POLICY_SCHEMA). */
  | 'POLICY_SCHEMA'
  /** `meta.version` is not the one version this code reads (1). */
  | 'POLICY_VERSION'
  /** The combined exclude expression is not a regular expression Python's `re` accepts. */
  | 'POLICY_BAD_REGEX'
  /** The exclude expression is valid Python, but uses syntax that has no JavaScript equivalent. */
  | 'POLICY_REGEX_UNSUPPORTED'
  /** The policy, a list, a path or a pattern is larger than the documented bound. */
  | 'POLICY_TOO_LARGE'
  /** `verification-keys` does not decode to RSA or EC public keys. */
  | 'POLICY_BAD_KEY';

/** What a {@link PolicyError} points at. */
export interface PolicyErrorDetails {
  /** JSON path of the offending field, e.g. `digests["/usr/bin/ls"][0]`. */
  readonly field: string;
  /** What the field must be, and what it is. */
  readonly expected: string;
  readonly got: string;
  /** The bound that was exceeded. */
  readonly limit: number;
  /** Character offset in the combined exclude expression. */
  readonly offset: number;
}

/** A policy that cannot be used, with a stable {@link PolicyErrorCode}. */
export class PolicyError extends DetailedError<PolicyErrorCode, PolicyErrorDetails> {}
