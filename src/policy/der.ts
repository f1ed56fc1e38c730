/**
 * A minimal DER reader (ITU-T X.690 §8.1: identifier, definite length, contents) for the few
 * structures the policy reads: SubjectPublicKeyInfo, X.509 TBSCertificate fields, and PKCS#7
 * SignedData (RFC 2315 §9, RFC 5652 §5). Single-byte tags only (all of these use them).
 */

/** One element: its tag byte, where it starts (identifier), and where its contents start and end. */
export interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly body: number;
  readonly end: number;
}

/** DER that does not have the expected shape. */
export class DerShapeError extends Error {}

/** The element at `at`, which must end by `limit`. */
export function readTlv(bytes: Uint8Array, at: number, limit = bytes.length): Tlv {
  if (at + 2 > limit) throw new DerShapeError(`DER element truncated at ${at}`);
  const tag = bytes[at] as number;
  let length = bytes[at + 1] as number;
  let body = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4 || body + count > limit) throw new DerShapeError(`DER length at ${at} is not definite and short`);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (bytes[body + i] as number);
    body += count;
  }
  if (body + length > limit) throw new DerShapeError(`DER element at ${at} runs past its container`);
  return { tag, start: at, body, end: body + length };
}

/** The elements inside a constructed element. */
export function children(bytes: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let at = parent.body; at < parent.end; ) {
    const child = readTlv(bytes, at, parent.end);
    out.push(child);
    at = child.end;
  }
  return out;
}

/** An element's contents. */
export function contents(bytes: Uint8Array, tlv: Tlv): Uint8Array {
  return bytes.subarray(tlv.body, tlv.end);
}

/** An element's whole encoding (identifier, length and contents). */
export function encoding(bytes: Uint8Array, tlv: Tlv): Uint8Array {
  return bytes.subarray(tlv.start, tlv.end);
}

/** The child at `index`, which must have tag `tag`. */
export function child(bytes: Uint8Array, parent: Tlv, index: number, tag: number): Tlv {
  const found = children(bytes, parent)[index];
  if (found === undefined || found.tag !== tag) throw new DerShapeError(`expected tag 0x${tag.toString(16)} as element ${index}`);
  return found;
}

/** An OBJECT IDENTIFIER's dotted form (X.690 §8.19). */
export function oidText(bytes: Uint8Array, tlv: Tlv): string {
  if (tlv.tag !== 0x06) throw new DerShapeError('expected an OBJECT IDENTIFIER');
  const parts: number[] = [];
  let value = 0;
  for (let i = tlv.body; i < tlv.end; i++) {
    const b = bytes[i] as number;
    value = value * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      if (parts.length === 0) parts.push(value < 80 ? Math.floor(value / 40) : 2, value < 80 ? value % 40 : value - 80);
      else parts.push(value);
      value = 0;
    }
  }
  return parts.join('.');
}
