/**
 * fast-check arbitraries of kernel-shaped records of every template, built independently of the
 * code under test (template digests with node:crypto createHash, field layouts from docs/ima-formats.md
 * #templates-and-fields).
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { BUILTIN_TEMPLATES, type Endian, type FieldId, type ImaRecord } from '../../src/ima/index.js';

function u32(n: number, endian: Endian): Uint8Array {
  const b = Buffer.alloc(4);
  if (endian === 'le') b.writeUInt32LE(n >>> 0);
  else b.writeUInt32BE(n >>> 0);
  return b;
}

/** A kernel string: no space (replaced by `_`), no NUL, no newline; any other byte. */
const kernelString = (maxLength: number) =>
  fc.uint8Array({ minLength: 0, maxLength }).map((b) => Uint8Array.from(b, (x) => (x <= 0x20 || x === 0x7f ? 0x5f : x)));

/**
 * `<prefix>:` + NUL + digest. A bare `:` prefix (which the kernel prints as the digest alone) only
 * with a digest: `:` + NUL with no digest prints nothing, like a zero-length field.
 */
const digestWithAlgo = fc
  .oneof(
    fc.tuple(fc.constantFrom('sha1:', 'sha256:', 'sha384:', 'sha512:', 'md5:', 'sm3:', 'ima:sha256:', 'verity:sha256:'), fc.uint8Array({ maxLength: 64 })),
    fc.tuple(fc.constant(':'), fc.uint8Array({ minLength: 1, maxLength: 64 })),
  )
  .map(([prefix, digest]) => Buffer.concat([Buffer.from(prefix, 'latin1'), Buffer.alloc(1), digest]));

/** Field bytes of each field id, in the list's byte order for integer fields. */
export function fieldArbitrary(id: FieldId, endian: Endian): fc.Arbitrary<Uint8Array> {
  switch (id) {
    case 'd':
      return fc.uint8Array({ minLength: 20, maxLength: 20 });
    case 'n':
      return kernelString(255);
    case 'd-ng':
    case 'd-ngv2':
      return digestWithAlgo;
    case 'd-modsig':
      return fc.oneof(fc.constant(new Uint8Array(0)), digestWithAlgo);
    case 'n-ng':
      return kernelString(300).map((s) => Buffer.concat([s, Buffer.alloc(1)]));
    case 'xattrnames':
      return fc.oneof(fc.constant(new Uint8Array(0)), kernelString(80).filter((s) => s.length > 0).map((s) => Buffer.concat([s, Buffer.alloc(1)])));
    case 'iuid':
    case 'igid':
      return fc.oneof(fc.constant(new Uint8Array(0)), fc.nat().map((n) => u32(n, endian)));
    case 'imode':
      return fc.oneof(
        fc.constant(new Uint8Array(0)),
        fc.integer({ min: 0, max: 0xffff }).map((n) => Uint8Array.from(endian === 'le' ? [n & 0xff, n >> 8] : [n >> 8, n & 0xff])),
      );
    case 'sig':
    case 'buf':
    case 'modsig':
    case 'evmsig':
    case 'xattrlengths':
    case 'xattrvalues':
      return fc.uint8Array({ maxLength: 300 });
  }
}

/** Template data of `template` from field bytes (docs/ima-formats.md#binary-record), independently encoded. */
export function templateData(template: string, fields: readonly Uint8Array[], endian: Endian): Uint8Array {
  if (template === 'ima') {
    const [d = new Uint8Array(20), n = new Uint8Array(0)] = fields;
    return Buffer.concat([d, u32(n.length, endian), n]);
  }
  return Buffer.concat(fields.flatMap((f) => [u32(f.length, endian), f]));
}

/** SHA-1 template digest, independently: SHA-1(data), or for `ima` SHA-1(d ‖ name padded to 256). */
export function sha1TemplateDigest(template: string, fields: readonly Uint8Array[], data: Uint8Array): Uint8Array {
  if (template !== 'ima') return createHash('sha1').update(data).digest();
  const [d = new Uint8Array(20), n = new Uint8Array(0)] = fields;
  const padded = Buffer.alloc(256);
  padded.set(n);
  return createHash('sha1').update(d).update(padded).digest();
}

/** A generated record with the field bytes it was built from. */
export interface GeneratedRecord {
  readonly record: ImaRecord;
  readonly fieldIds: readonly FieldId[];
  readonly fields: readonly Uint8Array[];
}

/** Template names: built-ins and custom format strings (`d-ng|n-ng|buf`). */
export const templateNames = fc.oneof(
  fc.constantFrom(...Object.keys(BUILTIN_TEMPLATES)),
  fc.constantFrom('d-ng|n-ng|buf', 'd-ngv2|n-ng|sig|iuid|igid|imode', 'd-ng|n-ng|xattrnames|xattrlengths'),
);

/** Records of every known template, violations included, for a byte order. */
export function recordArbitrary(endian: Endian): fc.Arbitrary<GeneratedRecord> {
  return templateNames.chain((template) => {
    const fieldIds: readonly FieldId[] = template === 'ima' ? ['d', 'n'] : (BUILTIN_TEMPLATES[template] ?? (template.split('|') as FieldId[]));
    return fc
      .tuple(fc.tuple(...fieldIds.map((id) => fieldArbitrary(id, endian))), fc.nat({ max: 0xffffffff }), fc.boolean(), fc.integer({ min: 0, max: 9 }))
      .map(([fields, pcrBits, lowPcr, violationDie]) => {
        const data = templateData(template, fields, endian);
        const violation = violationDie === 0;
        const digest = violation ? new Uint8Array(20) : sha1TemplateDigest(template, fields, data);
        return { record: { pcr: lowPcr ? pcrBits % 24 : pcrBits, digest, template, data }, fieldIds, fields };
      });
  });
}
