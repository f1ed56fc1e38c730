/**
 * Credential activation (TPM 2.0 Part 1 §24): a verifier encrypts a secret to an EK so that only
 * the TPM holding that EK, with the named object (the AK) loaded beside it, can recover it.
 *
 * Verifier side in software with `node:crypto` (`makeCredential`, what TPM2_MakeCredential does,
 * Part 3 §12.6): a seed shared with the EK (RSA-OAEP with label "IDENTITY", or ECDH with an
 * ephemeral key and KDFe), KDFa "STORAGE" for the symmetric key that encrypts the credential,
 * KDFa "INTEGRITY" for the HMAC key of the outer HMAC over encIdentity ‖ the AK's Name
 * (Part 1 §24.4-24.5). Device side: TPM2_ActivateCredential with the EK authorized by its policy.
 * The file format is tpm2-tools' (`tpm2_makecredential -o`), which Keylime also sends.
 */
import {
  type KeyObject,
  constants,
  createCipheriv,
  createHash,
  createHmac,
  diffieHellman,
  generateKeyPairSync,
  publicEncrypt,
  randomBytes,
  randomInt,
} from 'node:crypto';
import { TPM_ALG, TPM_CC, TPM_ECC } from './constants.js';
import { ImakeepError } from '../errors.js';
import { TpmProtocolError } from './errors.js';
import { TpmReader, TpmWriter } from './marshal.js';
import type { TpmCommand } from './command.js';
import type { LoadedEk } from './ek.js';
import { hashOfAlg, withPolicySession } from './session.js';
import type { TpmPublic } from './structures.js';
import type { Tpm } from './tpm.js';
import { publicKeyFromTpmPublic } from './verify.js';

/** A credential encrypted to an EK: what ActivateCredential takes. */
export interface CredentialChallenge {
  /** `TPM2B_ID_OBJECT` contents: integrityHMAC (a TPM2B_DIGEST) ‖ encIdentity. */
  readonly credentialBlob: Uint8Array;
  /** `TPM2B_ENCRYPTED_SECRET` contents: the OAEP-encrypted seed, or the ephemeral ECC point. */
  readonly secret: Uint8Array;
}

/** Input of TPM2_ActivateCredential. */
export interface ActivateCredentialRequest {
  /** The object the credential names (the AK), authorized with its empty password (ADMIN role). */
  readonly activateHandle: number;
  /** The EK, whose USER role is authorized by `keySession`. */
  readonly keyHandle: number;
  /** A policy session satisfying the EK's authPolicy. */
  readonly keySession: number;
  readonly challenge: CredentialChallenge;
}

/** TPM2_ActivateCredential: Part 3 §12.5. Returns certInfo, the decrypted credential. */
export const ActivateCredential: TpmCommand<ActivateCredentialRequest, Uint8Array> = {
  name: 'TPM2_ActivateCredential',
  code: TPM_CC.ActivateCredential,
  handles: (req) => [req.activateHandle, req.keyHandle],
  authorized: 2,
  sessions: (req) => [undefined, req.keySession],
  responseHandles: 0,
  writeParams: (w, req) => void w.tpm2b(req.challenge.credentialBlob).tpm2b(req.challenge.secret),
  readParams: (r) => r.tpm2b('certInfo').slice(),
};

/**
 * Activates `challenge` with the EK `ek` and the loaded object `activateHandle`: a policy session
 * of the EK's name algorithm runs the EK template's policy (PolicySecret(TPM_RH_ENDORSEMENT), then
 * PolicyOR for the high range) and authorizes the EK. Returns the credential. A challenge made for
 * another EK or another object's Name fails in the TPM (TPM_RC_INTEGRITY, TPM_RC_VALUE, ...).
 */
export function activateCredential(tpm: Tpm, ek: LoadedEk, activateHandle: number, challenge: CredentialChallenge): Promise<Uint8Array> {
  return withPolicySession(tpm, ek.template.nameAlg, ek.template.policy, (keySession) =>
    tpm.execute(ActivateCredential, { activateHandle, keyHandle: ek.handle, keySession, challenge }),
  );
}

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};

/** A KDF label as used: the string and a terminating zero byte (Part 1 §11.4.10.2). */
const label = (s: string): Buffer => Buffer.from(`${s}\0`, 'latin1');

/**
 * KDFa (Part 1 §11.4.10.2, SP 800-108 counter mode with HMAC): K(i) = HMAC(key, [i]₃₂ ‖ label ‖ 00
 * ‖ contextU ‖ contextV ‖ [bits]₃₂), concatenated and cut to `bits`.
 */
export function kdfa(hashAlg: number, key: Uint8Array, use: string, contextU: Uint8Array, contextV: Uint8Array, bits: number): Uint8Array {
  const { name } = hashOfAlg(hashAlg);
  return counterKdf(bits, (i) => createHmac(name, key).update(i).update(label(use)).update(contextU).update(contextV).update(u32(bits)).digest());
}

/**
 * KDFe (Part 1 §11.4.10.3, SP 800-56A concatenation KDF): K(i) = H([i]₃₂ ‖ Z ‖ label ‖ 00 ‖
 * partyUInfo ‖ partyVInfo), concatenated and cut to `bits`.
 */
export function kdfe(hashAlg: number, z: Uint8Array, use: string, partyU: Uint8Array, partyV: Uint8Array, bits: number): Uint8Array {
  const { name } = hashOfAlg(hashAlg);
  return counterKdf(bits, (i) => createHash(name).update(i).update(z).update(label(use)).update(partyU).update(partyV).digest());
}

/** The blocks `block([1]₃₂)`, `block([2]₃₂)`, ... concatenated and cut to `bits` (both KDFs' counter mode). */
function counterKdf(bits: number, block: (counter: Buffer) => Buffer): Uint8Array {
  const parts: Buffer[] = [];
  for (let i = 1, have = 0; have * 8 < bits; i++) {
    const b = block(u32(i));
    parts.push(b);
    have += b.length;
  }
  return new Uint8Array(Buffer.concat(parts).subarray(0, bits / 8));
}

/** node:crypto curve names and coordinate sizes by TPM_ECC_CURVE. */
const CURVES: ReadonlyMap<number, { readonly name: string; readonly size: number }> = new Map([
  [TPM_ECC.NIST_P256, { name: 'prime256v1', size: 32 }],
  [TPM_ECC.NIST_P384, { name: 'secp384r1', size: 48 }],
]);

const fromB64u = (s: string | undefined): Buffer => Buffer.from(s ?? '', 'base64url');

/** Left-pads a big-endian coordinate to `size` bytes (a TPM may drop leading zeros). */
const pad = (b: Uint8Array, size: number): Buffer => Buffer.concat([Buffer.alloc(Math.max(0, size - b.length)), b]);

/** The seed shared with the EK and its encryption for the TPM (Part 1 §24.4; Part 1 §11.4.10.3 for ECC). */
function shareSeed(ek: TpmPublic, ekKey: KeyObject): { seed: Uint8Array; encryptedSeed: Uint8Array } {
  const { name, size } = hashOfAlg(ek.nameAlg);
  if (ek.type === 'rsa') {
    const seed = randomBytes(size);
    const encryptedSeed = publicEncrypt({ key: ekKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: name, oaepLabel: label('IDENTITY') }, seed);
    return { seed: new Uint8Array(seed), encryptedSeed: new Uint8Array(encryptedSeed) };
  }
  const curve = CURVES.get(ek.curve);
  if (curve === undefined) throw new TpmProtocolError(`MakeCredential: unsupported EK curve 0x${ek.curve.toString(16)}`);
  const ephemeral = generateKeyPairSync('ec', { namedCurve: curve.name });
  const jwk = ephemeral.publicKey.export({ format: 'jwk' });
  const x = pad(fromB64u(jwk.x), curve.size);
  const y = pad(fromB64u(jwk.y), curve.size);
  const z = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: ekKey });
  // partyUInfo: the ephemeral key's x; partyVInfo: the EK's x (Part 1 §24.4, C.6.1 of SP 800-56A "One-Pass Diffie-Hellman").
  const seed = kdfe(ek.nameAlg, z, 'IDENTITY', x, pad(ek.x, curve.size), size * 8);
  // TPMS_ECC_POINT: TPM2B x ‖ TPM2B y.
  return { seed, encryptedSeed: new TpmWriter().tpm2b(x).tpm2b(y).finish() };
}

/**
 * TPM2_MakeCredential in software (Part 3 §12.6, Part 1 §24): encrypts `credential` (at most the
 * digest size of the EK's name algorithm) to the EK `ek` for the object named `objectName`.
 * Throws `TpmProtocolError` for an EK that is not a storage key with AES-CFB or of an unsupported type.
 */
export function makeCredential(ek: TpmPublic, objectName: Uint8Array, credential: Uint8Array): CredentialChallenge {
  const { name, size } = hashOfAlg(ek.nameAlg);
  if (credential.length > size) throw new RangeError(`credential of ${credential.length} bytes exceeds the EK's ${size}-byte digest`);
  const sym = ek.symmetric;
  if (sym === null || sym.alg !== TPM_ALG.AES || sym.mode !== TPM_ALG.CFB) {
    throw new TpmProtocolError('MakeCredential: the EK has no AES-CFB symmetric algorithm (not a storage key)');
  }
  const { seed, encryptedSeed } = shareSeed(ek, publicKeyFromTpmPublic(ek));
  const symKey = kdfa(ek.nameAlg, seed, 'STORAGE', objectName, new Uint8Array(0), sym.keyBits);
  const cipher = createCipheriv(`aes-${sym.keyBits}-cfb`, symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([cipher.update(new TpmWriter().tpm2b(credential).finish()), cipher.final()]);
  const hmacKey = kdfa(ek.nameAlg, seed, 'INTEGRITY', new Uint8Array(0), new Uint8Array(0), size * 8);
  const outerHmac = createHmac(name, hmacKey).update(encIdentity).update(objectName).digest();
  return { credentialBlob: new TpmWriter().tpm2b(outerHmac).bytes(encIdentity).finish(), secret: encryptedSeed };
}

/** First field of a tpm2-tools credential file (`tpm2_makecredential -o`, tools/misc/tpm2_makecredential.c). */
export const CREDENTIAL_FILE_MAGIC = 0xbadcc0de;

/** A credential file that is not magic ‖ version 1 ‖ TPM2B_ID_OBJECT ‖ TPM2B_ENCRYPTED_SECRET. Code `TPM_BAD_CREDENTIAL_BLOB`. */
export class CredentialBlobError extends ImakeepError {
  /** Byte offset where parsing stopped, when known. */
  readonly offset: number | undefined;

  constructor(message: string, offset?: number, options?: { cause?: unknown }) {
    super('TPM_BAD_CREDENTIAL_BLOB', message, options);
    this.offset = offset;
  }
}

/** The tpm2-tools credential file: u32 0xBADCC0DE, u32 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET (big-endian). */
export function encodeCredentialFile(challenge: CredentialChallenge): Uint8Array {
  return new TpmWriter().u32(CREDENTIAL_FILE_MAGIC).u32(1).tpm2b(challenge.credentialBlob).tpm2b(challenge.secret).finish();
}

/** Parses a tpm2-tools credential file; `CredentialBlobError` for anything else. */
export function decodeCredentialFile(bytes: Uint8Array): CredentialChallenge {
  const r = new TpmReader(bytes);
  try {
    const magic = r.u32('magic');
    if (magic !== CREDENTIAL_FILE_MAGIC) throw new CredentialBlobError(`magic 0x${magic.toString(16)} is not 0xbadcc0de`, 0);
    const version = r.u32('version');
    if (version !== 1) throw new CredentialBlobError(`version ${version} is not 1`, 4);
    const credentialBlob = r.tpm2b('TPM2B_ID_OBJECT').slice();
    const secret = r.tpm2b('TPM2B_ENCRYPTED_SECRET').slice();
    r.expectEnd('credential file');
    return { credentialBlob, secret };
  } catch (e) {
    if (e instanceof TpmProtocolError) throw new CredentialBlobError(e.message, e.offset, { cause: e });
    throw e;
  }
}

/**
 * A fresh credential secret as Keylime's registrar makes one (`tpm_util.random_password(32)`): 32
 * random letters and digits, so its bytes are also its UTF-8 text.
 */
export function newCredentialSecret(): Uint8Array {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return new Uint8Array(Buffer.from(Array.from({ length: 32 }, () => alphabet[randomInt(alphabet.length)]).join(''), 'latin1'));
}

/**
 * The proof that a device activated `secret`, in Keylime's shape: `auth_tag` =
 * hex(HMAC-SHA384(key = base64(secret) as UTF-8, msg = device id as UTF-8)) — the registrar keeps
 * `key = base64(secret)` and compares `crypto.do_hmac(agent.key.encode(), agent_id)`
 * (keylime/registrar, `activate` handler; rust-keylime registrar_client.rs).
 */
export function activationProof(secret: Uint8Array, deviceId: string): string {
  return createHmac('sha384', Buffer.from(Buffer.from(secret).toString('base64'), 'utf8')).update(deviceId, 'utf8').digest('hex');
}
