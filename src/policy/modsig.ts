/**
 * Appended signatures (`ima-modsig`: the `modsig` and `d-modsig` fields), checked as the kernel
 * checks them (security/integrity/ima/ima_modsig.c):
 *
 * - a file signed like a kernel module ends with a PKCS#7 SignedData, `struct module_signature`
 *   and "~Module signature appended~\n" (`ima_read_modsig`); the `modsig` field is the PKCS#7
 *   alone (`ima_eventmodsig_init` stores `raw_pkcs7`);
 * - `d-modsig` is the digest PKCS#7 computes (`ima_collect_modsig` → `pkcs7_get_digest`), in the
 *   signer's digest algorithm: the digest of the file without the appended signature when the
 *   signer has no authenticated attributes; with them, the digest of the attributes as a DER SET
 *   (crypto/asymmetric_keys/pkcs7_verify.c `pkcs7_digest`), whose messageDigest attribute is the
 *   file's digest. Either way it is the digest the signature signs;
 * - `ima_modsig_verify` → `verify_pkcs7_message_sig`: the signer's signature over that digest with
 *   the key the signer names (pkcs7_verify.c `pkcs7_verify_one`).
 *
 * From the record alone, the file's own digest without the signature cannot be recomputed (the
 * file is not there); what is checked is that the signature over `d-modsig` verifies with a
 * trusted key and, with authenticated attributes, that `d-modsig` is their digest. Exactly one
 * signer, as `pkcs7_get_digest` requires.
 *
 * The signer is named by subject key identifier (`sign-file -k`) or by issuer and serial number
 * (sign-file's default). A key identifier's last 4 bytes are the key id of the policy's keys
 * (docs/policy.md#appended-signatures-ima-modsig). Issuer and serial match keys learned from
 * certificates measured onto a trusted keyring; the policy's `verification-keys` are bare public
 * keys with no issuer, so for them each key is tried in turn, and a signature none verifies is
 * from an unknown key.
 */
import { createHash } from 'node:crypto';
import { bytesEqual } from '../base/bytes.js';
import { child, children, contents, DerShapeError, encoding, oidText, readTlv, type Tlv } from './der.js';
import { issuerSerialOf, verifiableHash, verifyDigestSignature, type Keyring, type SignatureStatus, type VerificationKey } from './signatures.js';

/** Digest algorithm OIDs (RFC 3279, RFC 5754, NIST CSOR) by kernel hash name. */
const DIGEST_OIDS: Readonly<Record<string, string>> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
  '2.16.840.1.101.3.4.2.4': 'sha224',
  '2.16.840.1.101.3.4.2.8': 'sha3-256',
  '2.16.840.1.101.3.4.2.9': 'sha3-384',
  '2.16.840.1.101.3.4.2.10': 'sha3-512',
};

/** signedData (PKCS #7, RFC 2315 §14). */
const SIGNED_DATA = '1.2.840.113549.1.7.2';

/** The one signer of a PKCS#7 SignedData, as far as checking its signature needs. */
export interface Pkcs7Signer {
  /** The kernel name of the signer's digest algorithm, or the OID when it is none of {@link DIGEST_OIDS}. */
  readonly digestAlgo: string;
  /** The last 4 bytes of the subject key identifier, when the signer is named by it. */
  readonly keyId: number | undefined;
  /** The issuer and serial number ({@link issuerSerialOf}), when the signer is named by them. */
  readonly issuerSerial: string | undefined;
  /** The authenticated attributes' DER with the SET tag (what their digest is over), or null. */
  readonly signedAttributes: Uint8Array | null;
  readonly signature: Uint8Array;
}

/**
 * The signer of a DER PKCS#7 ContentInfo holding SignedData (RFC 2315 §9.1, RFC 5652 §5.3), or
 * null when the bytes are not one with exactly one signer.
 */
export function parsePkcs7Signer(der: Uint8Array): Pkcs7Signer | null {
  try {
    const info = readTlv(der, 0);
    if (info.end !== der.length || info.tag !== 0x30) return null;
    if (oidText(der, child(der, info, 0, 0x06)) !== SIGNED_DATA) return null;
    const signedData = child(der, child(der, info, 1, 0xa0), 0, 0x30);
    const parts = children(der, signedData);
    const signerInfos = parts[parts.length - 1];
    if (signerInfos?.tag !== 0x31) return null;
    const signers = children(der, signerInfos);
    const signer = signers[0];
    if (signers.length !== 1 || signer === undefined || signer.tag !== 0x30) return null;
    return signerOf(der, children(der, signer));
  } catch (e) {
    if (e instanceof DerShapeError) return null;
    throw e;
  }
}

/** SignerInfo: version, sid, digestAlgorithm, [0] authenticatedAttributes?, digestEncryptionAlgorithm, encryptedDigest, ... */
function signerOf(der: Uint8Array, fields: readonly Tlv[]): Pkcs7Signer | null {
  const [, sid, digestAlgorithm, maybeAttributes] = fields;
  if (sid === undefined || digestAlgorithm?.tag !== 0x30 || maybeAttributes === undefined) return null;
  const hasAttributes = maybeAttributes.tag === 0xa0;
  const signature = fields[hasAttributes ? 5 : 4];
  if (signature?.tag !== 0x04) return null;
  const oid = oidText(der, child(der, digestAlgorithm, 0, 0x06));
  let keyId: number | undefined;
  let issuerSerial: string | undefined;
  if (sid.tag === 0x80) {
    // [0] IMPLICIT SubjectKeyIdentifier (RFC 5652 §5.3).
    const skid = contents(der, sid);
    if (skid.length < 4) return null;
    keyId = Buffer.from(skid.buffer, skid.byteOffset + skid.length - 4, 4).readUInt32BE(0);
  } else if (sid.tag === 0x30) {
    const issuer = child(der, sid, 0, 0x30);
    const serial = child(der, sid, 1, 0x02);
    issuerSerial = issuerSerialOf(encoding(der, issuer), contents(der, serial));
  } else {
    return null;
  }
  let signedAttributes: Uint8Array | null = null;
  if (hasAttributes) {
    // Digested as a SET OF (tag 0x31), not with the [0] IMPLICIT tag it is sent with (RFC 5652 §5.4).
    signedAttributes = Uint8Array.from(encoding(der, maybeAttributes));
    signedAttributes[0] = 0x31;
  }
  return { digestAlgo: DIGEST_OIDS[oid] ?? oid, keyId, issuerSerial, signedAttributes, signature: contents(der, signature) };
}

/**
 * Checks the appended signature `pkcs7` of a record whose `d-modsig` is `digest` of algorithm
 * `digestAlgo`, with `keys`. Status as for IMA signatures: `malformed` (not a one-signer
 * SignedData), `hash-mismatch` (d-modsig is not in the signer's algorithm, or not the digest of
 * its authenticated attributes), `unsupported` (a digest imakeep cannot verify with),
 * `unknown-key`, `invalid`, `valid`.
 */
export function checkModsig(pkcs7: Uint8Array, digest: Uint8Array, digestAlgo: string, keys: Keyring): SignatureStatus {
  const signer = parsePkcs7Signer(pkcs7);
  if (signer === null) return 'malformed';
  if (signer.digestAlgo !== digestAlgo) return 'hash-mismatch';
  const nodeHash = verifiableHash(signer.digestAlgo);
  if (nodeHash === undefined) return 'unsupported';
  if (signer.signedAttributes !== null && !bytesEqual(createHash(nodeHash).update(signer.signedAttributes).digest(), digest)) return 'hash-mismatch';
  const verifies = (key: VerificationKey): boolean => verifyDigestSignature(key, signer.digestAlgo, digest, signer.signature);
  if (signer.keyId !== undefined) {
    const key = keys.get(signer.keyId);
    if (key === undefined) return 'unknown-key';
    return verifies(key) ? 'valid' : 'invalid';
  }
  let named: VerificationKey | undefined;
  for (const key of keys.keys()) {
    if (named === undefined && key.issuerSerial === signer.issuerSerial) named = key;
  }
  if (named !== undefined) return verifies(named) ? 'valid' : 'invalid';
  for (const key of keys.keys()) {
    if (key.issuerSerial === undefined && verifies(key)) return 'valid';
  }
  return 'unknown-key';
}
