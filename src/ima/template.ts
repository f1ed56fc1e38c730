/**
 * Templates and their fields (docs/ima-formats.md#templates-and-fields): which fields a template has, how template data
 * splits into fields, typed decoding, and building template data from fields.
 *
 * A template name the kernel shows is either a built-in template's name or, for a custom template
 * (`ima_template_fmt=`), its format string such as `d-ng|n-ng|sig`: `ima_measurements_show()`
 * prints `template_desc->fmt` when the name is empty (security/integrity/ima/ima_fs.c). Both are
 * resolved here; any other name is an unknown template, kept raw.
 */
import { ImaError } from './errors.js';
import { readU32, writeU32, concatBytes, type Endian } from './hash.js';

/** Template field identifiers (security/integrity/ima/ima_template.c `supported_fields[]`). */
export type FieldId =
  | 'd'
  | 'n'
  | 'd-ng'
  | 'd-ngv2'
  | 'd-modsig'
  | 'n-ng'
  | 'sig'
  | 'buf'
  | 'modsig'
  | 'evmsig'
  | 'iuid'
  | 'igid'
  | 'imode'
  | 'xattrnames'
  | 'xattrlengths'
  | 'xattrvalues';

/**
 * How a field prints in the ASCII list (`enum data_formats` and the `field_show` of each field,
 * ima_template_lib.c): `digest` and `hex` as hex, `digest-with-algo` as `<prefix>:` + hex,
 * `string` up to its NUL, `uint` in decimal.
 */
export type FieldFormat = 'digest' | 'digest-with-algo' | 'string' | 'hex' | 'uint';

/** ASCII format of every known field (ima_template.c `supported_fields[].field_show`). */
export const FIELD_FORMAT: Readonly<Record<FieldId, FieldFormat>> = {
  d: 'digest',
  n: 'string',
  'd-ng': 'digest-with-algo',
  'd-ngv2': 'digest-with-algo',
  'd-modsig': 'digest-with-algo',
  'n-ng': 'string',
  sig: 'hex',
  buf: 'hex',
  modsig: 'hex',
  evmsig: 'hex',
  iuid: 'uint',
  igid: 'uint',
  imode: 'uint',
  xattrnames: 'string',
  xattrlengths: 'hex',
  xattrvalues: 'hex',
};

/** Built-in templates and their fields (ima_template.c `builtin_templates[]`, docs/ima-formats.md#templates-and-fields). */
export const BUILTIN_TEMPLATES: Readonly<Record<string, readonly FieldId[]>> = {
  ima: ['d', 'n'],
  'ima-ng': ['d-ng', 'n-ng'],
  'ima-ngv2': ['d-ngv2', 'n-ng'],
  'ima-sig': ['d-ng', 'n-ng', 'sig'],
  'ima-sigv2': ['d-ngv2', 'n-ng', 'sig'],
  'ima-buf': ['d-ng', 'n-ng', 'buf'],
  'ima-modsig': ['d-ng', 'n-ng', 'sig', 'd-modsig', 'modsig'],
  'evm-sig': ['d-ng', 'n-ng', 'evmsig', 'xattrnames', 'xattrlengths', 'xattrvalues', 'iuid', 'igid', 'imode'],
};

/** Name of the legacy template whose record has no data-length field (docs/ima-formats.md#binary-record). */
export const IMA_TEMPLATE = 'ima';

/** Size of the `d` field of the `ima` template: a SHA-1 (or zero-padded MD5) digest. */
export const IMA_D_SIZE = 20;

/**
 * Longest name of the `ima` template's `n` field: IMA_EVENT_NAME_LEN_MAX (255); longer paths fall
 * back to the last path component, which NAME_MAX also bounds to 255 (ima_template_lib.c
 * `ima_eventname_init_common()`). The template digest pads the name to 256 bytes (docs/ima-formats.md#template-digest).
 */
export const IMA_NAME_MAX = 255;

/** `IMA_TEMPLATE_NUM_FIELDS_MAX` (ima.h): no template has more fields. */
export const MAX_TEMPLATE_FIELDS = 15;

const KNOWN_FIELDS = new Set<string>(Object.keys(FIELD_FORMAT));

function isFieldId(id: string): id is FieldId {
  return KNOWN_FIELDS.has(id);
}

/**
 * Fields of a template name as the kernel shows it: a built-in template, or a custom template's
 * format string (`d-ng|n-ng|sig`). Null for an unknown template.
 */
export function templateFields(template: string): readonly FieldId[] | null {
  const builtin = Object.hasOwn(BUILTIN_TEMPLATES, template) ? BUILTIN_TEMPLATES[template] : undefined;
  if (builtin !== undefined) return builtin;
  const ids = template.split('|');
  if (ids.length > MAX_TEMPLATE_FIELDS) return null;
  const fields: FieldId[] = [];
  for (const id of ids) {
    if (!isFieldId(id)) return null;
    fields.push(id);
  }
  return fields;
}

/**
 * Splits template data into the bytes of each field (without their u32 length prefixes), or null if
 * the lengths do not tile the data exactly. The `ima` template's data is `d (20) | u32 len | name`.
 * Field views share the data's memory.
 */
export function splitTemplateData(template: string, data: Uint8Array, endian: Endian): Uint8Array[] | null {
  const fields: Uint8Array[] = [];
  let at = 0;
  if (template === IMA_TEMPLATE) {
    if (data.length < IMA_D_SIZE) return null;
    fields.push(data.subarray(0, IMA_D_SIZE));
    at = IMA_D_SIZE;
  }
  while (at < data.length) {
    if (data.length - at < 4 || fields.length >= MAX_TEMPLATE_FIELDS) return null;
    const len = readU32(data, at, endian);
    if (len > data.length - at - 4) return null;
    fields.push(data.subarray(at + 4, at + 4 + len));
    at += 4 + len;
  }
  return fields;
}

/**
 * Builds template data from field bytes: `u32 len | bytes` per field, or for the `ima` template
 * `d | u32 len | name` (the inverse of {@link splitTemplateData}).
 */
export function encodeTemplateData(template: string, fields: readonly Uint8Array[], endian: Endian): Uint8Array {
  const parts: Uint8Array[] = [];
  fields.forEach((field, i) => {
    if (!(template === IMA_TEMPLATE && i === 0)) {
      const len = new Uint8Array(4);
      writeU32(len, 0, field.length, endian);
      parts.push(len);
    }
    parts.push(field);
  });
  return concatBytes(parts);
}

/** A decoded template field; `bytes` are the field's data without the length prefix. */
export type TemplateField =
  | { readonly id: 'd'; readonly bytes: Uint8Array; readonly digest: Uint8Array }
  | {
      readonly id: 'd-ng' | 'd-ngv2' | 'd-modsig';
      readonly bytes: Uint8Array;
      /** Text before the NUL, e.g. `sha256:` or `ima:sha256:`; empty for a zero-length field. */
      readonly prefix: string;
      /** Hash algorithm name (`sha256`); empty for a zero-length field. */
      readonly algo: string;
      /** d-ngv2 digest type (`ima`, `verity`); undefined for d-ng. */
      readonly digestType: string | undefined;
      readonly digest: Uint8Array;
    }
  | {
      readonly id: 'n' | 'n-ng' | 'xattrnames';
      readonly bytes: Uint8Array;
      /** The string up to its NUL, decoded as UTF-8 (the bytes stay exact in `bytes`). */
      readonly text: string;
    }
  | {
      readonly id: 'sig' | 'buf' | 'modsig' | 'evmsig' | 'xattrlengths' | 'xattrvalues';
      readonly bytes: Uint8Array;
    }
  | {
      readonly id: 'iuid' | 'igid' | 'imode';
      readonly bytes: Uint8Array;
      /** The value in the list's byte order; null unless the field is 1, 2, 4 or 8 bytes. */
      readonly value: bigint | null;
    }
  | { readonly id: 'unknown'; readonly bytes: Uint8Array };

/** Template data decoded into fields. */
export interface DecodedTemplate {
  readonly template: string;
  /** Field ids of the template; null for an unknown template (its fields are `unknown`). */
  readonly fieldIds: readonly FieldId[] | null;
  /**
   * The fields. For an unknown template: its length-prefixed fields, or, if the data do not split
   * into fields, one `unknown` field holding all of the data (kept, never dropped).
   */
  readonly fields: readonly TemplateField[];
}

/** Position of the `<prefix>:` + NUL separator of a digest-with-algo field, or -1 (ima_template_lib.c). */
export function digestPrefixEnd(bytes: Uint8Array): number {
  const nul = bytes.indexOf(0);
  return nul > 0 && bytes[nul - 1] === 0x3a ? nul : -1;
}

/**
 * An integer field's value in the list's byte order, or null unless it is 1, 2, 4 or 8 bytes
 * (`ima_show_template_uint()` prints nothing for other sizes).
 */
export function readUint(bytes: Uint8Array, endian: Endian): bigint | null {
  if (![1, 2, 4, 8].includes(bytes.length)) return null;
  let v = 0n;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[endian === 'le' ? bytes.length - 1 - i : i] as number;
    v = (v << 8n) | BigInt(b);
  }
  return v;
}

/** The C string of a string field: its bytes up to the first NUL (what `%s` prints). */
export function cString(bytes: Uint8Array): Uint8Array {
  const nul = bytes.indexOf(0);
  return nul < 0 ? bytes : bytes.subarray(0, nul);
}

const utf8 = new TextDecoder('utf-8');

function decodeField(id: FieldId, bytes: Uint8Array, endian: Endian, recordIndex: number | undefined): TemplateField {
  switch (id) {
    case 'd':
      return { id, bytes, digest: bytes };
    case 'd-ng':
    case 'd-ngv2':
    case 'd-modsig': {
      if (bytes.length === 0) return { id, bytes, prefix: '', algo: '', digestType: undefined, digest: bytes };
      const end = digestPrefixEnd(bytes);
      if (end < 0) {
        throw new ImaError('IMA_BAD_TEMPLATE', `field ${id} lacks its '<algo>:' + NUL prefix`, { recordIndex });
      }
      const prefix = utf8.decode(bytes.subarray(0, end));
      const parts = prefix.slice(0, -1).split(':');
      const algo = parts[parts.length - 1] ?? '';
      const digestType = id === 'd-ngv2' && parts.length > 1 ? parts.slice(0, -1).join(':') : undefined;
      return { id, bytes, prefix, algo, digestType, digest: bytes.subarray(end + 1) };
    }
    case 'n':
    case 'n-ng':
    case 'xattrnames':
      return { id, bytes, text: utf8.decode(cString(bytes)) };
    case 'iuid':
    case 'igid':
    case 'imode':
      return { id, bytes, value: readUint(bytes, endian) };
    case 'sig':
    case 'buf':
    case 'modsig':
    case 'evmsig':
    case 'xattrlengths':
    case 'xattrvalues':
      return { id, bytes };
  }
}

/**
 * Splits a known template's data into exactly its fields; throws `IMA_BAD_TEMPLATE` if the data
 * do not tile into that many fields.
 */
export function splitKnownTemplate(
  template: string,
  fieldIds: readonly FieldId[],
  data: Uint8Array,
  endian: Endian,
  recordIndex?: number,
): Uint8Array[] {
  const parts = splitTemplateData(template, data, endian);
  if (parts === null || parts.length !== fieldIds.length) {
    throw new ImaError(
      'IMA_BAD_TEMPLATE',
      `template data of '${template}' do not split into its ${fieldIds.length} fields (${fieldIds.join('|')})`,
      { recordIndex },
    );
  }
  return parts;
}

/**
 * Decodes a record's template data into typed fields (docs/ima-formats.md#templates-and-fields). `endian` is the list's
 * byte order, which the fields' length prefixes and integers follow (docs/ima-formats.md#byte-order). Unknown templates are
 * returned raw (see {@link DecodedTemplate}); a known template whose data do not parse throws
 * `IMA_BAD_TEMPLATE`.
 */
export function decodeTemplateFields(
  rec: { readonly template: string; readonly data: Uint8Array },
  endian: Endian = 'le',
  recordIndex?: number,
): DecodedTemplate {
  const fieldIds = templateFields(rec.template);
  if (fieldIds === null) {
    const parts = splitTemplateData(rec.template, rec.data, endian) ?? [rec.data];
    return { template: rec.template, fieldIds: null, fields: parts.map((bytes) => ({ id: 'unknown', bytes })) };
  }
  const parts = splitKnownTemplate(rec.template, fieldIds, rec.data, endian, recordIndex);
  const fields = parts.map((bytes, i) => decodeField(fieldIds[i] as FieldId, bytes, endian, recordIndex));
  return { template: rec.template, fieldIds, fields };
}

/** Fields whose bytes are integers in the list's byte order, and their integer width. */
function integerWidth(id: FieldId | undefined, length: number): number {
  if (id === 'iuid' || id === 'igid' || id === 'imode') return length;
  if (id === 'xattrlengths') return 4;
  return 1;
}

function swapWords(bytes: Uint8Array, width: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  if (width <= 1 || bytes.length % width !== 0) return out;
  for (let at = 0; at < out.length; at += width) out.subarray(at, at + width).reverse();
  return out;
}

/**
 * Rewrites template data from one byte order to the other: every field length prefix, the
 * integer fields (`iuid`, `igid`, `imode`) and the u32 array of `xattrlengths`
 * (ima_template_lib.c writes them in canonical order if `ima_canonical_fmt`). Unknown templates:
 * only the length prefixes. The result no longer hashes to the record's template digest, which the
 * kernel computed over the data in the original order (docs/ima-formats.md#template-digest); that is why records keep their
 * list's byte order and this is only for building test lists of the other order.
 */
export function convertTemplateData(template: string, data: Uint8Array, from: Endian, to: Endian): Uint8Array {
  if (from === to) return data;
  const parts = splitTemplateData(template, data, from);
  if (parts === null) throw new ImaError('IMA_BAD_TEMPLATE', `template data of '${template}' do not split into fields`);
  const ids = templateFields(template);
  const swapped = parts.map((bytes, i) => swapWords(bytes, integerWidth(ids?.[i], bytes.length)));
  return encodeTemplateData(template, swapped, to);
}
