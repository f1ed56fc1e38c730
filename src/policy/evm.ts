/**
 * EVM portable signatures (the `evm-sig` template:
 * `d-ng|n-ng|evmsig|xattrnames|xattrlengths|xattrvalues|iuid|igid|imode`), checked as the kernel
 * checks them, from what the record carries:
 *
 * - `evmsig` is the file's `security.evm` when it is a portable signature (type 5
 *   EVM_XATTR_PORTABLE_DIGSIG; ima_template_lib.c `ima_eventevmsig_init` records no other type),
 *   a `signature_v2_hdr` (security/integrity/integrity.h);
 * - the signed digest is `evm_calc_hmac_or_hash` (security/integrity/evm/evm_crypto.c) in the
 *   header's hash algorithm: the values of the protected xattrs present, in the kernel's order,
 *   then `struct h_misc { unsigned long ino; u32 generation; uid_t uid; gid_t gid; umode_t mode; }`
 *   with ino and generation zero for a portable signature (`hmac_add_misc`), and no filesystem
 *   UUID. The record carries all of it: `xattrvalues` (split by `xattrlengths`) are the protected
 *   xattrs present, in that order (`evm_read_protected_xattrs`), `iuid`, `igid`, `imode`;
 * - the signature is over that digest itself (digsig.c `integrity_digsig_verify` →
 *   `asymmetric_verify`; no ima_file_id, even for a version 3 header).
 *
 * `struct h_misc` is taken as a 64-bit kernel lays it out (24 bytes: 8 ino, 4 generation, 4 uid,
 * 4 gid, 2 mode, 2 padding), in the list's byte order; a 32-bit kernel's (20 bytes) is not tried.
 *
 * The EVM signature protects the xattrs, not the file's content: the content is bound through
 * `security.ima` (a portable signature requires it: `evm_calc_hmac_or_hash` "Portable EVM
 * signatures must include an IMA hash"). The record's digest (`d-ng`) is bound when
 * `security.ima` is a digest equal to it (IMA_XATTR_DIGEST_NG: type 4, hash algo, digest;
 * IMA_XATTR_DIGEST: type 1, SHA-1) or an IMA signature that verifies over it.
 * docs/policy.md#evm-signatures-evm-sig.
 */
import { createHash } from 'node:crypto';
import { bytesEqual } from '../base/bytes.js';
import {
  checkSignature,
  EVM_IMA_XATTR_DIGSIG,
  EVM_XATTR_PORTABLE_DIGSIG,
  HASH_ALGOS,
  parseImaSignature,
  verifiableHash,
  verifyDigestSignature,
  type Keyring,
  type SignatureStatus,
} from './signatures.js';
import type { Endian } from '../ima/index.js';

/** `enum evm_ima_xattr_type` values of `security.ima` that hold a digest (integrity.h). */
const IMA_XATTR_DIGEST = 1;
const IMA_XATTR_DIGEST_NG = 4;

/** The `security.ima` xattr name (include/uapi/linux/xattr.h XATTR_NAME_IMA). */
const XATTR_NAME_IMA = 'security.ima';

/** What an evm-sig record carries besides its digest and name. */
export interface EvmFields {
  readonly evmsig: Uint8Array;
  /** `xattrnames`: the names joined by `|`. */
  readonly names: string;
  /** `xattrlengths`: one u32 per name, in the list's byte order. */
  readonly lengths: Uint8Array;
  readonly values: Uint8Array;
  readonly uid: bigint;
  readonly gid: bigint;
  readonly mode: bigint;
}

/** Outcome of an EVM check: as {@link SignatureStatus} (no hash mismatch: the digest is computed here), or `unbound` when a valid signature does not cover the record's digest. */
export type EvmStatus = Exclude<SignatureStatus, 'hash-mismatch'> | 'unbound';

/** The protected xattrs, name → value, or null if the lengths do not tile the values. */
function splitXattrs(fields: EvmFields, endian: Endian): Map<string, Uint8Array> | null {
  const names = fields.names === '' ? [] : fields.names.split('|');
  if (fields.lengths.length !== names.length * 4) return null;
  const view = new DataView(fields.lengths.buffer, fields.lengths.byteOffset, fields.lengths.length);
  const out = new Map<string, Uint8Array>();
  let at = 0;
  for (let i = 0; i < names.length; i++) {
    const length = view.getUint32(i * 4, endian === 'le');
    if (at + length > fields.values.length) return null;
    out.set(names[i] as string, fields.values.subarray(at, at + length));
    at += length;
  }
  return at === fields.values.length ? out : null;
}

/** `struct h_misc` of a portable signature on a 64-bit kernel: ino and generation zero. */
function hMisc(fields: EvmFields, endian: Endian): Uint8Array {
  const misc = new Uint8Array(24);
  const view = new DataView(misc.buffer);
  const le = endian === 'le';
  view.setUint32(12, Number(fields.uid & 0xffffffffn), le);
  view.setUint32(16, Number(fields.gid & 0xffffffffn), le);
  view.setUint16(20, Number(fields.mode & 0xffffn), le);
  return misc;
}

/** Whether `security.ima` binds the file digest `digest` of algorithm `algo`. */
function imaBinds(ima: Uint8Array, digest: Uint8Array, algo: string, keys: Keyring): boolean {
  const type = ima[0];
  if (type === IMA_XATTR_DIGEST_NG) return HASH_ALGOS[ima[1] ?? -1]?.name === algo && bytesEqual(ima.subarray(2), digest);
  if (type === IMA_XATTR_DIGEST) return algo === 'sha1' && bytesEqual(ima.subarray(1), digest);
  if (type === EVM_IMA_XATTR_DIGSIG) {
    const sig = parseImaSignature(ima);
    return sig !== null && checkSignature(sig, digest, algo, keys) === 'valid';
  }
  return false;
}

/**
 * Checks the EVM portable signature of a record whose file digest is `digest` of algorithm
 * `algo`: `malformed` (not a type 5 version 2/3 header, xattrs that do not decode, no
 * `security.ima`), `unsupported`, `unknown-key`, `invalid`, `unbound` (the signature verifies
 * but `security.ima` does not bind the record's digest), or `valid`.
 */
export function checkEvmSignature(fields: EvmFields, digest: Uint8Array, algo: string, keys: Keyring, endian: Endian): EvmStatus {
  const sig = parseImaSignature(fields.evmsig);
  if (sig === null || sig.type !== EVM_XATTR_PORTABLE_DIGSIG || (sig.version !== 2 && sig.version !== 3)) return 'malformed';
  const hashAlgo = HASH_ALGOS[sig.hashAlgo];
  if (hashAlgo === undefined) return 'malformed';
  const xattrs = splitXattrs(fields, endian);
  const ima = xattrs?.get(XATTR_NAME_IMA);
  if (xattrs === null || ima === undefined) return 'malformed';
  const nodeHash = verifiableHash(hashAlgo.name);
  if (nodeHash === undefined) return 'unsupported';
  const key = keys.get(sig.keyId);
  if (key === undefined) return 'unknown-key';
  const hash = createHash(nodeHash);
  for (const value of xattrs.values()) hash.update(value);
  hash.update(hMisc(fields, endian));
  if (!verifyDigestSignature(key, hashAlgo.name, new Uint8Array(hash.digest()), sig.signature)) return 'invalid';
  return imaBinds(ima, digest, algo, keys) ? 'valid' : 'unbound';
}
