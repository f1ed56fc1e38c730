/**
 * IMA file signatures (the `sig` field of ima-sig, ima-sigv2 and ima-modsig records, i.e. the
 * `security.ima` xattr) and the keys that verify them, as Keylime checks them
 * (keylime/ima/file_signatures.py `ImaKeyrings.integrity_digsig_verify`, `_asymmetric_verify`)
 * after the kernel (security/integrity/digsig.c `integrity_digsig_verify()`,
 * security/integrity/digsig_asymmetric.c `asymmetric_verify()`).
 *
 * Layout (`struct signature_v2_hdr`, security/integrity/integrity.h), big-endian:
 * `type (1) | version (1) | hash_algo (1) | keyid (4) | sig_size (2) | sig[sig_size]`.
 * - type 3 EVM_IMA_XATTR_DIGSIG or 5 EVM_XATTR_PORTABLE_DIGSIG with version 2: the signature is
 *   over the file digest (RSA PKCS#1 v1.5 with the DigestInfo of hash_algo, or ECDSA);
 * - version 3 (type 3, 5 or 6 IMA_VERITY_DIGSIG): over H(ima_file_id), where
 *   `struct ima_file_id { u8 hash_type (the xattr type); u8 hash_algorithm; u8 hash[digest size] }`
 *   (digsig_asymmetric.c `calc_file_id_hash()`). Keylime reads version 2 only; imakeep reads both.
 * - keyid: the last 4 bytes of SHA-1 of the key's subjectPublicKey bits (RSA: the PKCS#1
 *   RSAPublicKey DER; EC: the SEC 1 point), as evmctl computes it (ima-evm-utils libimaevm.c
 *   `calc_keyid_v2()`), or for a certificate the last 4 bytes of its subject key identifier
 *   (file_signatures.py `_get_keyidv2_from_cert`, the kernel's `id:` lookup).
 */
import { createHash, createPrivateKey, createPublicKey, publicDecrypt, constants, X509Certificate, type KeyObject } from 'node:crypto';
import { child, children, contents, encoding, readTlv } from './der.js';
import { curveByName, pointFromJwk, verifyEcdsaDigest, type Curve, type Point } from './ecdsa.js';

/** Kernel hash algorithm names and digest sizes by `enum hash_algo` id (include/uapi/linux/hash_info.h, crypto/hash_info.c). */
export const HASH_ALGOS: readonly { readonly name: string; readonly size: number }[] = [
  { name: 'md4', size: 16 },
  { name: 'md5', size: 16 },
  { name: 'sha1', size: 20 },
  { name: 'rmd160', size: 20 },
  { name: 'sha256', size: 32 },
  { name: 'sha384', size: 48 },
  { name: 'sha512', size: 64 },
  { name: 'sha224', size: 28 },
  { name: 'rmd128', size: 16 },
  { name: 'rmd256', size: 32 },
  { name: 'rmd320', size: 40 },
  { name: 'wp256', size: 32 },
  { name: 'wp384', size: 48 },
  { name: 'wp512', size: 64 },
  { name: 'tgr128', size: 16 },
  { name: 'tgr160', size: 20 },
  { name: 'tgr192', size: 24 },
  { name: 'sm3', size: 32 },
  { name: 'streebog256', size: 32 },
  { name: 'streebog512', size: 64 },
  { name: 'sha3-256', size: 32 },
  { name: 'sha3-384', size: 48 },
  { name: 'sha3-512', size: 64 },
];

/** Digest size of a kernel hash algorithm name, or undefined for a name the kernel does not have. */
export function hashAlgoSize(name: string): number | undefined {
  return HASH_ALGOS.find((a) => a.name === name)?.size;
}

/**
 * DER DigestInfo prefixes (RFC 8017 §9.2 note 1; SHA-3 OIDs 2.16.840.1.101.3.4.2.8-10) for the
 * algorithms whose RSA signatures are checked; others are `unsupported`.
 */
const DIGEST_INFO: Readonly<Record<string, string>> = {
  md5: '3020300c06082a864886f70d020505000410',
  sha1: '3021300906052b0e03021a05000414',
  sha224: '302d300d06096086480165030402040500041c',
  sha256: '3031300d060960864801650304020105000420',
  sha384: '3041300d060960864801650304020205000430',
  sha512: '3051300d060960864801650304020305000440',
  'sha3-256': '3031300d060960864801650304020805000420',
  'sha3-384': '3041300d060960864801650304020905000430',
  'sha3-512': '3051300d060960864801650304020a05000440',
};

/** Node's name of a kernel hash algorithm, for the v3 file-id hash. */
const NODE_HASH: Readonly<Record<string, string>> = {
  md5: 'md5',
  sha1: 'sha1',
  sha224: 'sha224',
  sha256: 'sha256',
  sha384: 'sha384',
  sha512: 'sha512',
  'sha3-256': 'sha3-256',
  'sha3-384': 'sha3-384',
  'sha3-512': 'sha3-512',
};

/** Node's name of a kernel hash algorithm whose signatures are checked, or undefined for the others. */
export function verifiableHash(algoName: string): string | undefined {
  return DIGEST_INFO[algoName] === undefined ? undefined : NODE_HASH[algoName];
}

/** `enum evm_ima_xattr_type` (security/integrity/integrity.h). */
export const EVM_IMA_XATTR_DIGSIG = 3;
export const EVM_XATTR_PORTABLE_DIGSIG = 5;
export const IMA_VERITY_DIGSIG = 6;

/** A parsed `signature_v2_hdr` and its signature bytes. */
export interface ImaSignature {
  readonly type: number;
  readonly version: number;
  readonly hashAlgo: number;
  readonly keyId: number;
  readonly signature: Uint8Array;
}

/** Header size of `struct signature_v2_hdr`. */
const SIG_HEADER = 9;

/**
 * The signature in a `sig` field, or null if the bytes do not have the header's shape
 * (shorter than the header, or sig_size not the rest): Keylime then treats the record as unsigned
 * (keylime/ima/ast.py `Signature`, `ImaSig.create_signature`).
 */
export function parseImaSignature(bytes: Uint8Array): ImaSignature | null {
  if (bytes.length < SIG_HEADER) return null;
  const size = ((bytes[7] as number) << 8) | (bytes[8] as number);
  if (SIG_HEADER + size !== bytes.length) return null;
  const keyId = (((bytes[3] as number) << 24) | ((bytes[4] as number) << 16) | ((bytes[5] as number) << 8) | (bytes[6] as number)) >>> 0;
  return { type: bytes[0] as number, version: bytes[1] as number, hashAlgo: bytes[2] as number, keyId, signature: bytes.subarray(SIG_HEADER) };
}

/** A key that verifies IMA signatures. */
export interface VerificationKey {
  readonly keyId: number;
  readonly key: KeyObject;
  /** For EC keys: the curve and public point. */
  readonly ec: { readonly curve: Curve; readonly point: Point } | null;
  /** For a key that came in a certificate: its issuer and serial number (see {@link issuerSerialOf}), which a PKCS#7 signer may name. */
  readonly issuerSerial?: string;
}

/** The `subjectPublicKey` BIT STRING contents of a DER SubjectPublicKeyInfo (X.509 §4.1; RFC 5280). */
function subjectPublicKeyBits(spki: Uint8Array): Uint8Array {
  // SEQUENCE { AlgorithmIdentifier, BIT STRING }: the BIT STRING's first byte counts unused bits (0).
  return contents(spki, child(spki, readTlv(spki, 0), 1, 0x03)).subarray(1);
}

/**
 * A signer's issuer and serial number as one string: the hex of the issuer Name's DER and of the
 * serial INTEGER's contents (RFC 5652 §10.2.4 IssuerAndSerialNumber; X.509 TBSCertificate).
 */
export function issuerSerialOf(issuerDer: Uint8Array, serial: Uint8Array): string {
  return `${Buffer.from(issuerDer).toString('hex')}:${Buffer.from(serial).toString('hex')}`;
}

/** The issuer and serial of a DER certificate (TBSCertificate: [0] version, serial, signature, issuer, ...). */
function certificateIssuerSerial(der: Uint8Array): string | undefined {
  try {
    const tbs = child(der, readTlv(der, 0), 0, 0x30);
    const fields = children(der, tbs);
    const offset = fields[0]?.tag === 0xa0 ? 1 : 0;
    const serial = fields[offset];
    const issuer = fields[offset + 2];
    if (serial?.tag !== 0x02 || issuer?.tag !== 0x30) return undefined;
    return issuerSerialOf(encoding(der, issuer), contents(der, serial));
  } catch {
    return undefined;
  }
}

/** keyidv2 of a public key: the last 4 bytes of SHA-1 of its subjectPublicKey bits, big-endian. */
export function keyIdOf(key: KeyObject): number {
  const spki = new Uint8Array(key.export({ type: 'spki', format: 'der' }));
  const sha1 = createHash('sha1').update(subjectPublicKeyBits(spki)).digest();
  return sha1.readUInt32BE(16);
}

/** A key that verifies IMA signatures, or a string saying why it cannot (not RSA or a NIST EC curve). */
export function verificationKey(key: KeyObject, keyId?: number, issuerSerial?: string): VerificationKey | string {
  const named = issuerSerial === undefined ? {} : { issuerSerial };
  if (key.asymmetricKeyType === 'rsa') return { keyId: keyId ?? keyIdOf(key), key, ec: null, ...named };
  if (key.asymmetricKeyType === 'ec') {
    const curveName = key.asymmetricKeyDetails?.namedCurve ?? '';
    const curve = curveByName(curveName);
    if (curve === undefined) return `EC curve '${curveName}' is not supported (prime256v1, secp384r1, secp521r1)`;
    const jwk = key.export({ format: 'jwk' });
    if (typeof jwk.x !== 'string' || typeof jwk.y !== 'string') return 'EC key without coordinates';
    return { keyId: keyId ?? keyIdOf(key), key, ec: { curve, point: pointFromJwk(jwk.x, jwk.y) }, ...named };
  }
  return `key type '${key.asymmetricKeyType ?? 'unknown'}' is not supported (RSA, EC)`;
}

/** Bytes of the OID 2.5.29.14 (subjectKeyIdentifier) as DER: `06 03 55 1d 0e`. */
const SKID_OID = Uint8Array.of(0x06, 0x03, 0x55, 0x1d, 0x0e);

/**
 * The last 4 bytes of a certificate's subject key identifier, or undefined without one. The
 * extension is `SEQUENCE { OID, [BOOLEAN critical], OCTET STRING { OCTET STRING keyIdentifier } }`
 * (RFC 5280 §4.2.1.2); only the DER bytes after the OID are read.
 */
export function certificateKeyId(der: Uint8Array): number | undefined {
  for (let i = der.indexOf(0x06); i >= 0 && i + SKID_OID.length < der.length; i = der.indexOf(0x06, i + 1)) {
    if (!SKID_OID.every((b, j) => der[i + j] === b)) continue;
    let at = i + SKID_OID.length;
    if (der[at] === 0x01) at += 2 + (der[at + 1] ?? 0);
    if (der[at] !== 0x04 || der[at + 2] !== 0x04) return undefined;
    const len = der[at + 3] ?? 0;
    if (len < 4 || len >= 0x80) return undefined;
    const end = at + 4 + len;
    if (end > der.length) return undefined;
    return Buffer.from(der.buffer, der.byteOffset + end - 4, 4).readUInt32BE(0);
  }
  return undefined;
}

/** What a buffer holds, tried as Keylime does (file_signatures.py `get_pubkey`). */
export type BufferKey =
  | { readonly kind: 'key'; readonly key: KeyObject; readonly keyId: number | undefined; readonly issuerSerial: string | undefined }
  | { readonly kind: 'none' };

/**
 * The public key in a buffer, tried in Keylime's order: DER then PEM X.509 certificate, DER then
 * PEM public key, DER then PEM private key (file_signatures.py `get_pubkey`). A certificate gives
 * its subject key identifier as key id.
 */
export function keyFromBuffer(data: Uint8Array): BufferKey {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
  try {
    const cert = new X509Certificate(buf);
    const der = new Uint8Array(cert.raw);
    return { kind: 'key', key: cert.publicKey, keyId: certificateKeyId(der), issuerSerial: certificateIssuerSerial(der) };
  } catch {
    // not a certificate: try the key encodings
  }
  const attempts: (() => KeyObject)[] = [
    () => createPublicKey({ key: buf, format: 'der', type: 'spki' }),
    () => createPublicKey({ key: buf, format: 'der', type: 'pkcs1' }),
    () => createPublicKey({ key: buf.toString('latin1'), format: 'pem' }),
    () => createPublicKey(createPrivateKey({ key: buf, format: 'der', type: 'pkcs8' })),
    () => createPublicKey(createPrivateKey({ key: buf.toString('latin1'), format: 'pem' })),
  ];
  for (const attempt of attempts) {
    try {
      return { kind: 'key', key: attempt(), keyId: undefined, issuerSerial: undefined };
    } catch {
      // next encoding
    }
  }
  return { kind: 'none' };
}

/** Outcome of checking one signature. */
export type SignatureStatus =
  /** Verified with a key of the policy or of a trusted keyring measurement. */
  | 'valid'
  /** A key with the signature's key id exists, and the signature does not verify. */
  | 'invalid'
  /** No key has the signature's key id. */
  | 'unknown-key'
  /** Wrong xattr type or version, unknown hash algorithm (Keylime: "Malformed signature"). */
  | 'malformed'
  /** The signature's hash algorithm is not the algorithm of the record's digest. */
  | 'hash-mismatch'
  /** A hash algorithm imakeep cannot verify with (e.g. streebog, sm3). */
  | 'unsupported';

/**
 * Keys by key id, in the order they were added: the policy's keys first, then keys learned from
 * keyring measurements (Keylime tries its keyrings in that order and takes the first key with the
 * id; `ImaKeyrings._asymmetric_verify`).
 */
export class Keyring {
  readonly #keys = new Map<number, VerificationKey>();

  get size(): number {
    return this.#keys.size;
  }

  add(key: VerificationKey): void {
    if (!this.#keys.has(key.keyId)) this.#keys.set(key.keyId, key);
  }

  get(keyId: number): VerificationKey | undefined {
    return this.#keys.get(keyId);
  }

  /** Every key, in the order added. */
  keys(): IterableIterator<VerificationKey> {
    return this.#keys.values();
  }
}

/** The bytes a v3 signature signs the hash of: `ima_file_id` over the digest's own size. */
function fileIdHash(type: number, algo: number, nodeHash: string, digest: Uint8Array): Uint8Array {
  const fileId = new Uint8Array(2 + digest.length);
  fileId[0] = type;
  fileId[1] = algo;
  fileId.set(digest, 2);
  return new Uint8Array(createHash(nodeHash).update(fileId).digest());
}

/**
 * Whether `signature` is `key`'s signature of the digest `signed` of kernel hash algorithm
 * `algoName`: RSA PKCS#1 v1.5 over its DigestInfo (RFC 8017 §8.2.2), or ECDSA (DER r, s).
 */
export function verifyDigestSignature(key: VerificationKey, algoName: string, signed: Uint8Array, signature: Uint8Array): boolean {
  if (key.ec !== null) return verifyEcdsaDigest(key.ec.curve, key.ec.point, signed, signature);
  const prefix = DIGEST_INFO[algoName];
  if (prefix === undefined) return false;
  try {
    const recovered = publicDecrypt({ key: key.key, padding: constants.RSA_PKCS1_PADDING }, signature);
    return recovered.toString('hex') === prefix + Buffer.from(signed.buffer, signed.byteOffset, signed.length).toString('hex');
  } catch {
    return false;
  }
}

/**
 * Checks a signature over the record's file digest `digest` of algorithm `digestAlgo` (the d-ng
 * prefix). Status as {@link SignatureStatus}; `valid` only if the key verifies it.
 */
export function checkSignature(sig: ImaSignature, digest: Uint8Array, digestAlgo: string, keys: Keyring): SignatureStatus {
  const v2 = sig.version === 2 && (sig.type === EVM_IMA_XATTR_DIGSIG || sig.type === EVM_XATTR_PORTABLE_DIGSIG);
  const v3 = sig.version === 3 && (sig.type === EVM_IMA_XATTR_DIGSIG || sig.type === EVM_XATTR_PORTABLE_DIGSIG || sig.type === IMA_VERITY_DIGSIG);
  const algo = HASH_ALGOS[sig.hashAlgo];
  if ((!v2 && !v3) || algo === undefined) return 'malformed';
  if (algo.name !== digestAlgo || digest.length !== algo.size) return 'hash-mismatch';
  const nodeHash = verifiableHash(algo.name);
  if (nodeHash === undefined) return 'unsupported';
  const key = keys.get(sig.keyId);
  if (key === undefined) return 'unknown-key';
  const signed = v3 ? fileIdHash(sig.type, sig.hashAlgo, nodeHash, digest) : digest;
  return verifyDigestSignature(key, algo.name, signed, sig.signature) ? 'valid' : 'invalid';
}
