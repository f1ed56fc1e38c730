/**
 * Policy sessions: the commands that open and satisfy one (StartAuthSession, PolicySecret,
 * PolicyOR), the policy digests a verifier computes for the same assertions (TPM 2.0 Part 1 §19.7,
 * Part 3 §23), and `withPolicySession`, which runs a command under a fresh session and flushes it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { TPM_ALG, TPM_CC, TPM_RH, TPM_SE } from './constants.js';
import { TpmError, TpmProtocolError } from './errors.js';
import type { TpmCommand } from './command.js';
import type { TpmWriter } from './marshal.js';
import type { Tpm } from './tpm.js';

const nothing = (): void => undefined;

/** Hash algorithms a policy digest may use here, by TPM_ALG_ID, with their node names and sizes. */
const POLICY_HASHES: ReadonlyMap<number, { readonly name: string; readonly size: number }> = new Map([
  [TPM_ALG.SHA256, { name: 'sha256', size: 32 }],
  [TPM_ALG.SHA384, { name: 'sha384', size: 48 }],
  [TPM_ALG.SHA512, { name: 'sha512', size: 64 }],
]);

/** The node hash name and digest size of a TPM hash algorithm; `TpmProtocolError` for one not used here. */
export function hashOfAlg(alg: number): { readonly name: string; readonly size: number } {
  const hash = POLICY_HASHES.get(alg);
  if (hash === undefined) throw new TpmProtocolError(`unsupported hash algorithm 0x${alg.toString(16)}`);
  return hash;
}

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};

/** H(parts...) with the TPM hash `alg`. */
function digest(alg: number, ...parts: Uint8Array[]): Uint8Array {
  const h = createHash(hashOfAlg(alg).name);
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

/** The policy digest every session starts from: all zeros, the size of its hash (Part 1 §19.7.2). */
export function emptyPolicy(alg: number): Uint8Array {
  return new Uint8Array(hashOfAlg(alg).size);
}

/**
 * The policy digest after TPM2_PolicySecret on the object `authName` with an empty policyRef:
 * H(H(old ‖ TPM_CC_PolicySecret ‖ authName) ‖ policyRef) (Part 3 §23.4.1, PolicyUpdate). A
 * permanent handle's Name is the handle itself (Part 1 §16).
 */
export function policySecretDigest(alg: number, authName: Uint8Array, old = emptyPolicy(alg)): Uint8Array {
  return digest(alg, digest(alg, old, u32(TPM_CC.PolicySecret), authName));
}

/** The policy digest after TPM2_PolicyOR of `branches`: H(zeros ‖ TPM_CC_PolicyOR ‖ digests) (Part 3 §23.6.1). */
export function policyOrDigest(alg: number, branches: readonly Uint8Array[]): Uint8Array {
  return digest(alg, emptyPolicy(alg), u32(TPM_CC.PolicyOR), ...branches);
}

/** The policy digest after TPM2_PolicyAuthorizeNV: H(old ‖ TPM_CC_PolicyAuthorizeNV ‖ nvIndexName) (Part 3 §23.22.1). */
export function policyAuthorizeNvDigest(alg: number, nvIndexName: Uint8Array, old = emptyPolicy(alg)): Uint8Array {
  return digest(alg, old, u32(TPM_CC.PolicyAuthorizeNV), nvIndexName);
}

/** Input of TPM2_StartAuthSession for an unsalted, unbound session without parameter encryption. */
export interface StartAuthSessionRequest {
  /** At least 16 bytes, at most the size of `authHash`'s digest (Part 3 §11.1.1). */
  readonly nonceCaller: Uint8Array;
  /** TPM_SE_POLICY or TPM_SE_HMAC. */
  readonly sessionType: number;
  /** The session's hash algorithm: a policy session's digest is of this algorithm. */
  readonly authHash: number;
}

/** Output of TPM2_StartAuthSession. */
export interface StartAuthSessionResponse {
  /** Session handle (0x03xxxxxx for policy sessions): flush it if the command it authorizes fails. */
  readonly handle: number;
  readonly nonceTPM: Uint8Array;
}

/** TPM2_StartAuthSession: Part 3 §11.1, tpmKey and bind TPM_RH_NULL (unsalted, unbound), symmetric TPM_ALG_NULL. */
export const StartAuthSession: TpmCommand<StartAuthSessionRequest, StartAuthSessionResponse> = {
  name: 'TPM2_StartAuthSession',
  code: TPM_CC.StartAuthSession,
  handles: () => [TPM_RH.NULL, TPM_RH.NULL],
  authorized: 0,
  responseHandles: 1,
  writeParams(w, req) {
    w.tpm2b(req.nonceCaller).u16(0); // encryptedSalt: empty (unsalted)
    w.u8(req.sessionType).u16(TPM_ALG.NULL).u16(req.authHash);
  },
  readParams: (r, handles) => ({ handle: handles[0] ?? 0, nonceTPM: r.tpm2b('nonceTPM').slice() }),
};

/** Input of TPM2_PolicySecret. */
export interface PolicySecretRequest {
  /** The entity whose (empty) authorization value is proven, e.g. TPM_RH_ENDORSEMENT. */
  readonly authHandle: number;
  readonly policySession: number;
}

/**
 * TPM2_PolicySecret: Part 3 §23.4, authorized with the empty password of `authHandle`; no nonce,
 * cpHash or policyRef, expiration 0 (no ticket is wanted, so nonceTPM may be empty).
 */
export const PolicySecret: TpmCommand<PolicySecretRequest, void> = {
  name: 'TPM2_PolicySecret',
  code: TPM_CC.PolicySecret,
  handles: (req) => [req.authHandle, req.policySession],
  authorized: 1,
  responseHandles: 0,
  writeParams: (w) => void w.u16(0).u16(0).u16(0).u32(0),
  readParams(r) {
    r.tpm2b('timeout');
    r.u16('policyTicket.tag');
    r.u32('policyTicket.hierarchy');
    r.tpm2b('policyTicket.digest');
  },
};

/** Input of TPM2_PolicyOR. */
export interface PolicyOrRequest {
  readonly policySession: number;
  /** `TPML_DIGEST` of 2 to 8 branch digests; the session's current digest must be one of them. */
  readonly branches: readonly Uint8Array[];
}

/** TPM2_PolicyOR: Part 3 §23.6. */
export const PolicyOR: TpmCommand<PolicyOrRequest, void> = {
  name: 'TPM2_PolicyOR',
  code: TPM_CC.PolicyOR,
  handles: (req) => [req.policySession],
  authorized: 0,
  responseHandles: 0,
  writeParams(w: TpmWriter, req) {
    w.u32(req.branches.length);
    for (const b of req.branches) w.tpm2b(b);
  },
  readParams: nothing,
};

/** The assertions that satisfy a policy, in order, as the session receives them. */
export type PolicyStep =
  | { readonly kind: 'secret'; readonly authHandle: number }
  | { readonly kind: 'or'; readonly branches: readonly Uint8Array[] };

/**
 * Opens a policy session of hash `authHash`, runs `steps` in it, then `use(session)`. The command
 * `use` sends consumes the session (continueSession clear); if anything fails first the session is
 * flushed here, so no session slot leaks.
 */
export async function withPolicySession<T>(
  tpm: Tpm,
  authHash: number,
  steps: readonly PolicyStep[],
  use: (session: number) => Promise<T>,
): Promise<T> {
  const nonceCaller = new Uint8Array(randomBytes(hashOfAlg(authHash).size));
  const { handle } = await tpm.execute(StartAuthSession, { nonceCaller, sessionType: TPM_SE.POLICY, authHash });
  let consumed = false;
  try {
    for (const step of steps) {
      if (step.kind === 'secret') await tpm.execute(PolicySecret, { authHandle: step.authHandle, policySession: handle });
      else await tpm.execute(PolicyOR, { policySession: handle, branches: step.branches });
    }
    const result = await use(handle);
    consumed = true;
    return result;
  } finally {
    if (!consumed) {
      try {
        await tpm.flush(handle);
      } catch (e) {
        // TPM_RC_HANDLE/VALUE: the failed command already ended the session.
        if (!(e instanceof TpmError)) throw e;
      }
    }
  }
}
