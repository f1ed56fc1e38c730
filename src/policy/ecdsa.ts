/**
 * ECDSA verification of a digest the caller already has (FIPS 186-4 §6.4.2), on the NIST prime
 * curves. IMA signs the file digest itself (security/integrity/digsig_asymmetric.c
 * `asymmetric_verify()` hands the digest to the key's verify), and node:crypto only verifies
 * ECDSA over data it hashes itself, so the check is done here with BigInt arithmetic.
 *
 * The base point of each curve comes from node:crypto (the public key of private key 1), so only
 * the field prime and the group order are written down; the tests check them against node
 * (n·G = ∞, 2G and 3G equal to the public keys of 2 and 3).
 */
import { createECDH } from 'node:crypto';

/** A short-Weierstrass curve y² = x³ − 3x + b over GF(p) with base point G of order n. */
export interface Curve {
  readonly name: string;
  readonly p: bigint;
  readonly n: bigint;
  /** Byte length of a coordinate. */
  readonly size: number;
  readonly g: Point;
}

/** An affine point; null is the point at infinity. */
export type Point = { readonly x: bigint; readonly y: bigint } | null;

/** Field primes and group orders (FIPS 186-4 D.1.2.3-5; SEC 2 §2.4). */
const PARAMS: Readonly<Record<string, { p: bigint; n: bigint; size: number }>> = {
  prime256v1: {
    p: 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n,
    n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    size: 32,
  },
  secp384r1: {
    p: 2n ** 384n - 2n ** 128n - 2n ** 96n + 2n ** 32n - 1n,
    n: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
    size: 48,
  },
  secp521r1: {
    p: 2n ** 521n - 1n,
    n: 0x01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409n,
    size: 66,
  },
};

const CURVES = new Map<string, Curve>();

function bytesToBigInt(bytes: Uint8Array): bigint {
  return bytes.length === 0 ? 0n : BigInt(`0x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('hex')}`);
}

/** The public point of private scalar `k` as node computes it (uncompressed SEC 1 encoding). */
export function nodePublicPoint(curveName: string, k: number): Point {
  const params = PARAMS[curveName];
  if (params === undefined) return null;
  const ecdh = createECDH(curveName);
  const priv = new Uint8Array(params.size);
  priv[params.size - 1] = k;
  ecdh.setPrivateKey(priv);
  const pub = ecdh.getPublicKey();
  return { x: bytesToBigInt(pub.subarray(1, 1 + params.size)), y: bytesToBigInt(pub.subarray(1 + params.size)) };
}

/** The curve named as node names it (`asymmetricKeyDetails.namedCurve`), or undefined if not supported. */
export function curveByName(name: string): Curve | undefined {
  const cached = CURVES.get(name);
  if (cached !== undefined) return cached;
  const params = PARAMS[name];
  if (params === undefined) return undefined;
  const curve = { name, ...params, g: nodePublicPoint(name, 1) };
  CURVES.set(name, curve);
  return curve;
}

function mod(a: bigint, m: bigint): bigint {
  const r = a % m;
  return r < 0n ? r + m : r;
}

/** Modular inverse by the extended Euclidean algorithm (m prime, a ≠ 0 mod m). */
function inverse(a: bigint, m: bigint): bigint {
  let [r0, r1] = [mod(a, m), m];
  let [s0, s1] = [1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  return mod(s0, m);
}

/** P + Q on the curve (a = −3). */
export function addPoints(curve: Curve, P: Point, Q: Point): Point {
  if (P === null) return Q;
  if (Q === null) return P;
  const p = curve.p;
  let lambda: bigint;
  if (P.x === Q.x) {
    if (mod(P.y + Q.y, p) === 0n) return null;
    lambda = mod((3n * P.x * P.x - 3n) * inverse(2n * P.y, p), p);
  } else {
    lambda = mod((Q.y - P.y) * inverse(Q.x - P.x, p), p);
  }
  const x = mod(lambda * lambda - P.x - Q.x, p);
  return { x, y: mod(lambda * (P.x - x) - P.y, p) };
}

/** k·P by double-and-add (verification only: no secret scalars, so timing does not matter). */
export function multiply(curve: Curve, k: bigint, P: Point): Point {
  let result: Point = null;
  let addend = P;
  for (let e = k; e > 0n; e >>= 1n) {
    if (e & 1n) result = addPoints(curve, result, addend);
    addend = addPoints(curve, addend, addend);
  }
  return result;
}

/** Reads a DER ECDSA-Sig-Value `SEQUENCE { r INTEGER, s INTEGER }`; null if malformed. */
export function decodeDerSignature(der: Uint8Array): { r: bigint; s: bigint } | null {
  let at = 0;
  const length = (): number | null => {
    const first = der[at++];
    if (first === undefined) return null;
    if (first < 0x80) return first;
    const count = first & 0x7f;
    if (count === 0 || count > 2) return null;
    let n = 0;
    for (let i = 0; i < count; i++) {
      const b = der[at++];
      if (b === undefined) return null;
      n = (n << 8) | b;
    }
    return n;
  };
  if (der[at++] !== 0x30) return null;
  const seqLen = length();
  if (seqLen === null || at + seqLen !== der.length) return null;
  const integer = (): bigint | null => {
    if (der[at++] !== 0x02) return null;
    const len = length();
    if (len === null || len === 0 || at + len > der.length) return null;
    const value = bytesToBigInt(der.subarray(at, at + len));
    at += len;
    return value;
  };
  const r = integer();
  const s = integer();
  return r === null || s === null || at !== der.length ? null : { r, s };
}

/**
 * True if `signature` (DER) is a valid ECDSA signature of `digest` by public point `Q`
 * (FIPS 186-4 §6.4.2: e = leftmost bits of the digest, w = s⁻¹, R = (e·w)G + (r·w)Q, R.x ≡ r).
 */
export function verifyEcdsaDigest(curve: Curve, Q: Point, digest: Uint8Array, signature: Uint8Array): boolean {
  const sig = decodeDerSignature(signature);
  if (sig === null || Q === null) return false;
  const { r, s } = sig;
  const n = curve.n;
  if (r <= 0n || r >= n || s <= 0n || s >= n) return false;
  const nBits = n.toString(2).length;
  let e = bytesToBigInt(digest);
  const excess = digest.length * 8 - nBits;
  if (excess > 0) e >>= BigInt(excess);
  const w = inverse(s, n);
  const R = addPoints(curve, multiply(curve, mod(e * w, n), curve.g), multiply(curve, mod(r * w, n), Q));
  return R !== null && mod(R.x, n) === r;
}

/** A public point from its JWK coordinates (base64url). */
export function pointFromJwk(x: string, y: string): Point {
  return { x: bytesToBigInt(Buffer.from(x, 'base64url')), y: bytesToBigInt(Buffer.from(y, 'base64url')) };
}
