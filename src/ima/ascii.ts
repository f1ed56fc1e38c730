/**
 * The ASCII measurement list (`ascii_runtime_measurements[_<bank>]`, docs/ima-formats.md#ascii-list):
 * the line formatter and a parser that rebuilds the template data from the field texts.
 *
 * Line: `%2d ` pcr, template digest in hex, ` <template name>`, then per field ` ` + text:
 * `digest`/`hex` fields in hex, `d-ng`-like fields as `<prefix>:` + hex, strings up to their NUL,
 * integers in decimal; a zero-length field prints nothing, so the space before it stays
 * (`ima_ascii_measurements_show()`, `ima_show_template_data_ascii()`). The kernel replaces spaces in
 * strings by `_` when it creates the record, so fields never contain a space.
 *
 * Unknown templates (a name that is neither built-in nor a field-id format string) can only come
 * from a kernel with templates this code does not know; they would still be built from known field
 * kinds. Their data are split into length-prefixed fields and each field is printed by the most
 * likely kind: `<algo>:` + NUL + digest as a digest-with-algo, a NUL-terminated printable string as
 * a string, anything else as hex. Data that do not split into fields throw `IMA_BAD_TEMPLATE`
 * (ASCII only: the binary codec keeps every template raw). Parsing an unknown template's ASCII line
 * throws `IMA_BAD_ASCII`: its data cannot be rebuilt without knowing its fields.
 *
 * Text: the kernel prints raw bytes. `formatAsciiLineBytes` and the list parser work on those
 * bytes exactly; the string forms decode/encode UTF-8.
 */
import { DIGEST_SIZE, type BankMode, type BankName } from './record.js';
import { ImaError } from './errors.js';
import { concatBytes, fromHex, latin1Bytes, latin1Text, toHex, type Endian } from './hash.js';
import { templateDigest } from './digest.js';
import { MAX_TEMPLATE_DATA_LEN, type ParsedRecord } from './binary.js';
import {
  FIELD_FORMAT,
  IMA_D_SIZE,
  IMA_TEMPLATE,
  cString,
  digestPrefixEnd,
  encodeTemplateData,
  readUint,
  splitKnownTemplate,
  splitTemplateData,
  templateFields,
  type FieldFormat,
  type FieldId,
} from './template.js';

/** Options of an ASCII list: the bank whose digests it shows, its mode, the data's byte order. */
export interface AsciiOptions {
  readonly bank?: BankName;
  readonly mode?: BankMode;
  readonly endian?: Endian;
}

/** Guessed ASCII format of a field of an unknown template (see the module comment). */
function guessFormat(bytes: Uint8Array): FieldFormat {
  const end = digestPrefixEnd(bytes);
  if (end > 0 && /^[a-z0-9_:-]+$/.test(latin1Text(bytes.subarray(0, end)))) return 'digest-with-algo';
  const nul = bytes.indexOf(0);
  if (nul === bytes.length - 1 && bytes.subarray(0, nul).every((b) => b > 0x20 && b !== 0x7f)) return 'string';
  return 'hex';
}

/**
 * Where one formatted line goes: Latin-1 text (numbers, names, digest prefixes: one byte per char,
 * as the parser decoded them), hex of bytes, and the raw bytes of string fields (the kernel prints
 * them as they are; the text form decodes them as UTF-8). The line is built once against this
 * interface (`writeAsciiLine`), written as bytes into a reused buffer for serving or as text.
 */
interface LineSink {
  text(ascii: string): void;
  /** Bytes printed as they are, read as Latin-1 (one char per byte) by the text form: a digest field's `<algo>:` prefix. */
  latin1(bytes: Uint8Array): void;
  hex(bytes: Uint8Array): void;
  raw(bytes: Uint8Array): void;
}

/** Writes one non-empty field: `digest`/`hex` in hex, `<prefix>:` + hex, a C string raw, a uint in decimal. */
function writeField(sink: LineSink, format: FieldFormat, bytes: Uint8Array, endian: Endian, recordIndex?: number): void {
  switch (format) {
    case 'digest':
    case 'hex':
      return sink.hex(bytes);
    case 'digest-with-algo': {
      // `strrchr(data, ':')`; the prefix is printed unless the colon is the first byte; the digest
      // follows the colon and its NUL (ima_show_template_data_ascii()).
      const end = digestPrefixEnd(bytes);
      if (end < 0) throw new ImaError('IMA_BAD_TEMPLATE', "digest field lacks its '<algo>:' + NUL prefix", { recordIndex });
      if (end > 1) sink.latin1(bytes.subarray(0, end));
      return sink.hex(bytes.subarray(end + 1));
    }
    case 'string':
      return sink.raw(cString(bytes));
    case 'uint':
      return sink.text(readUint(bytes, endian)?.toString() ?? '');
  }
}

/** `%2d` of the u32 pcr, which the kernel passes as an int. */
function pcrText(pcr: number): string {
  const v = pcr | 0;
  return PCR_TEXTS[v] ?? String(v).padStart(2, ' ');
}

/** `%2d` of the PCR indexes a TPM has (0..23), made once: each line starts with one. */
const PCR_TEXTS: readonly string[] = Array.from({ length: 24 }, (_, v) => String(v).padStart(2, ' '));

/** Writes one line of the list, with its newline (ima_ascii_measurements_show()). */
function writeAsciiLine(sink: LineSink, rec: ParsedRecord, opts: AsciiOptions, recordIndex?: number): void {
  const endian = opts.endian ?? 'le';
  const bank = opts.bank ?? 'sha1';
  sink.text(pcrText(rec.pcr));
  sink.text(' ');
  // The SHA-1 list shows the record's own digest: no copy (templateDigest copies it).
  sink.hex(bank === 'sha1' ? rec.digest : templateDigest(rec, bank, opts.mode ?? 'native', endian));
  sink.text(' ');
  sink.text(rec.template);
  const ids = templateFields(rec.template);
  const fields =
    ids === null
      ? splitTemplateData(rec.template, rec.data, endian)
      : splitKnownTemplate(rec.template, ids, rec.data, endian, recordIndex);
  if (fields === null) {
    throw new ImaError('IMA_BAD_TEMPLATE', `data of unknown template '${rec.template}' do not split into fields`, { recordIndex });
  }
  for (let i = 0; i < fields.length; i++) {
    const bytes = fields[i] as Uint8Array;
    sink.text(' ');
    if (bytes.length === 0) continue;
    const id = ids?.[i];
    writeField(sink, id === undefined ? guessFormat(bytes) : FIELD_FORMAT[id], bytes, endian, recordIndex);
  }
  sink.text('\n');
}

/** Two lowercase hex digits of each byte value, as char codes (`%*phN`). */
const HEX_PAIRS = (() => {
  const digits = '0123456789abcdef';
  const pairs = new Uint16Array(256);
  for (let b = 0; b < 256; b++) pairs[b] = digits.charCodeAt(b >> 4) | (digits.charCodeAt(b & 15) << 8);
  return pairs;
})();

/**
 * ASCII list lines written as the kernel's bytes into one growing buffer that is reused from
 * batch to batch: serving formats each line in place instead of building and joining a dozen small
 * arrays and strings per line (bench/results/lean.md). `take()` hands out the bytes written since
 * the last `take()` as a copy the caller owns. With the copy by the `Uint8Array` constructor, the
 * digest prefixes written as bytes and the PCR columns made once, serving the ASCII list of a 100k
 * record store went from 113 to 163 MB per CPU-second (medians of 3 runs, load 6.2-6.6). What
 * bounds it now is V8's scavenger (~29 % of the CPU): each line leaves ~1 KB of garbage (the
 * record and field views of `pushEach` and `splitKnownTemplate`), a 1 MiB young generation
 * (the daemon's flag) is scavenged every ~950 lines.
 */
export class AsciiListWriter implements LineSink {
  readonly #opts: AsciiOptions;
  #buf: Buffer;
  #at = 0;

  constructor(opts: AsciiOptions = {}, initialBytes = 64 * 1024) {
    this.#opts = opts;
    this.#buf = Buffer.allocUnsafe(initialBytes);
  }

  /** Appends the line of `rec`; `recordIndex` names it in errors. Nothing is kept of a line that throws. */
  line(rec: ParsedRecord, recordIndex?: number): void {
    const start = this.#at;
    try {
      writeAsciiLine(this, rec, this.#opts, recordIndex);
    } catch (e) {
      this.#at = start;
      throw e;
    }
  }

  /**
   * Bytes written since the last take, as a new array; the buffer is reused. Copied by the
   * `Uint8Array` constructor (a memcpy): `Uint8Array.prototype.slice` on a Buffer goes through
   * Buffer's species constructor, ~3x slower per byte (bench/results/lean.md).
   */
  take(): Uint8Array {
    const out = new Uint8Array(this.#buf.subarray(0, this.#at));
    this.#at = 0;
    return out;
  }

  text(latin1: string): void {
    this.#room(latin1.length);
    // Char by char: the strings are short (separators, names, numbers), where a call into
    // Buffer#write costs more than the copy (bench/results/lean.md).
    const buf = this.#buf;
    let at = this.#at;
    for (let i = 0; i < latin1.length; i++) buf[at++] = latin1.charCodeAt(i);
    this.#at = at;
  }

  latin1(bytes: Uint8Array): void {
    this.raw(bytes);
  }

  hex(bytes: Uint8Array): void {
    this.#room(bytes.length * 2);
    const buf = this.#buf;
    let at = this.#at;
    for (let i = 0; i < bytes.length; i++) {
      const pair = HEX_PAIRS[bytes[i] as number] as number;
      buf[at++] = pair & 0xff;
      buf[at++] = pair >> 8;
    }
    this.#at = at;
  }

  raw(bytes: Uint8Array): void {
    this.#room(bytes.length);
    this.#buf.set(bytes, this.#at);
    this.#at += bytes.length;
  }

  #room(n: number): void {
    if (this.#at + n <= this.#buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.#at + n, this.#buf.length * 2));
    this.#buf.copy(grown, 0, 0, this.#at);
    this.#buf = grown;
  }
}

/** A line as text: string fields decoded as UTF-8, everything else ASCII. */
class TextLine implements LineSink {
  value = '';
  text(ascii: string): void {
    this.value += ascii;
  }
  latin1(bytes: Uint8Array): void {
    this.value += latin1Text(bytes);
  }
  hex(bytes: Uint8Array): void {
    this.value += toHex(bytes);
  }
  raw(bytes: Uint8Array): void {
    this.value += utf8Decoder.decode(bytes);
  }
}

const utf8Decoder = new TextDecoder('utf-8');
const utf8Encoder = new TextEncoder();

/**
 * One line of `ascii_runtime_measurements[_<bank>]`, with its trailing newline, as text (string
 * fields decoded as UTF-8). Throws `IMA_BAD_TEMPLATE` if the data do not split into fields.
 */
export function formatAsciiLine(rec: ParsedRecord, opts: AsciiOptions = {}): string {
  const line = new TextLine();
  writeAsciiLine(line, rec, opts);
  return line.value;
}

/** {@link formatAsciiLine} as the exact bytes the kernel prints. */
export function formatAsciiLineBytes(rec: ParsedRecord, opts: AsciiOptions = {}, recordIndex?: number): Uint8Array {
  const writer = new AsciiListWriter(opts, 256);
  writer.line(rec, recordIndex);
  return writer.take();
}

/** Width of the integer fields (uid_t, gid_t: u32; umode_t: u16; ima_template_lib.c). */
const UINT_WIDTH: Partial<Record<FieldId, number>> = { iuid: 4, igid: 4, imode: 2 };

function badAscii(message: string, recordIndex?: number, byteOffset?: number): ImaError {
  return new ImaError('IMA_BAD_ASCII', message, { recordIndex, byteOffset });
}

/** Rebuilds the bytes of one field from its text (the inverse of {@link fieldText}). */
function fieldBytes(id: FieldId, text: string, template: string, endian: Endian): Uint8Array | string {
  const format = FIELD_FORMAT[id];
  if (text === '') return id === 'n-ng' ? new Uint8Array(1) : new Uint8Array(0);
  switch (format) {
    case 'digest':
    case 'hex': {
      const bytes = /^[0-9a-f]*$/.test(text) ? fromHex(text) : null;
      if (bytes === null) return `field ${id} is not lowercase hex`;
      if (id === 'd' && bytes.length !== IMA_D_SIZE) return `field d has ${bytes.length} bytes, not ${IMA_D_SIZE}`;
      return bytes;
    }
    case 'digest-with-algo': {
      const colon = text.lastIndexOf(':');
      const hex = text.slice(colon + 1);
      const digest = /^[0-9a-f]*$/.test(hex) ? fromHex(hex) : null;
      if (digest === null) return `field ${id} digest is not lowercase hex`;
      return concatBytes([latin1Bytes(colon < 0 ? ':' : text.slice(0, colon + 1)), new Uint8Array(1), digest]);
    }
    case 'string': {
      const bytes = latin1Bytes(text);
      // The `ima` template's `n` is shown without its NUL (IMA_SHOW_BINARY_OLD_STRING_FMT).
      return template === IMA_TEMPLATE ? bytes : concatBytes([bytes, new Uint8Array(1)]);
    }
    case 'uint': {
      const width = UINT_WIDTH[id] ?? 4;
      if (!/^\d{1,20}$/.test(text) || BigInt(text) >= 1n << BigInt(width * 8)) return `field ${id} is not a u${width * 8}`;
      const bytes = new Uint8Array(width);
      let v = BigInt(text);
      for (let i = 0; i < width; i++) {
        bytes[endian === 'le' ? i : width - 1 - i] = Number(v & 0xffn);
        v >>= 8n;
      }
      return bytes;
    }
  }
}

/**
 * Parses one ASCII line (with or without its newline) back into a record: the digest is the one
 * the line shows (the bank's), the template data are rebuilt from the field texts, with length
 * prefixes in `endian`. A string line is taken as UTF-8 text. Throws `IMA_BAD_ASCII`.
 */
export function parseAsciiLine(line: string | Uint8Array, opts: AsciiOptions = {}, recordIndex?: number, byteOffset?: number): ParsedRecord {
  const bank = opts.bank ?? 'sha1';
  const endian = opts.endian ?? 'le';
  let text = latin1Text(typeof line === 'string' ? utf8Encoder.encode(line) : line);
  if (text.endsWith('\n')) text = text.slice(0, -1);
  // `%2d ` pads one-digit PCR indexes with one space.
  const tokens = (/^ [0-9] /.test(text) ? text.slice(1) : text).split(' ');
  const [pcrText, digestHex, template, ...texts] = tokens;
  if (pcrText === undefined || digestHex === undefined || template === undefined) {
    throw badAscii('line has fewer than 3 space-separated columns', recordIndex, byteOffset);
  }
  if (!/^-?\d{1,10}$/.test(pcrText)) throw badAscii(`PCR index '${pcrText.slice(0, 16)}' is not a number`, recordIndex, byteOffset);
  const digest = /^[0-9a-f]*$/.test(digestHex) ? fromHex(digestHex) : null;
  if (digest === null || digest.length !== DIGEST_SIZE[bank]) {
    throw badAscii(`template digest is not ${DIGEST_SIZE[bank]} bytes of lowercase hex`, recordIndex, byteOffset);
  }
  const ids = templateFields(template);
  if (ids === null) throw badAscii(`unknown template '${template.slice(0, 64)}': its data cannot be rebuilt`, recordIndex, byteOffset);
  if (texts.length < ids.length) {
    throw badAscii(`template ${template} has ${ids.length} fields, the line ${texts.length}`, recordIndex, byteOffset);
  }
  // Extra tokens can only be spaces inside a string field (not kernel-made): give them to the first.
  const extra = texts.length - ids.length;
  const firstString = ids.findIndex((id) => FIELD_FORMAT[id] === 'string');
  if (extra > 0 && firstString < 0) throw badAscii(`template ${template} has ${ids.length} fields, the line ${texts.length}`, recordIndex, byteOffset);
  const fieldTexts = extra > 0 ? [...texts.slice(0, firstString), texts.slice(firstString, firstString + extra + 1).join(' '), ...texts.slice(firstString + extra + 1)] : texts;
  const fields = ids.map((id, i) => {
    const bytes = fieldBytes(id, fieldTexts[i] ?? '', template, endian);
    if (typeof bytes === 'string') throw badAscii(bytes, recordIndex, byteOffset);
    return bytes;
  });
  const pcr = Number(pcrText) >>> 0;
  return { pcr, digest, template, data: encodeTemplateData(template, fields, endian) };
}

/**
 * Longest ASCII line accepted: a record of {@link MAX_TEMPLATE_DATA_LEN} bytes printed in hex
 * plus its header. Bounds the memory of a hostile line without a newline.
 */
export const MAX_ASCII_LINE_LEN = 2 * MAX_TEMPLATE_DATA_LEN + 1024;

/**
 * Streaming parser of an ASCII list: push byte chunks of any size, get the records of complete
 * lines; {@link end} throws `IMA_TRUNCATED` if the last line lacks its newline.
 */
export class AsciiListParser {
  readonly #opts: AsciiOptions;
  #pending: Uint8Array[] = [];
  #pendingLength = 0;
  #records = 0;
  #consumed = 0;
  /** The error that ended the list, thrown again by every later call. */
  #failure: ImaError | undefined;

  constructor(opts: AsciiOptions = {}) {
    this.#opts = opts;
  }

  /** Records returned so far. */
  get recordsParsed(): number {
    return this.#records;
  }

  /** Bytes of the complete lines parsed so far. */
  get bytesConsumed(): number {
    return this.#consumed;
  }

  /**
   * Parses the lines `chunk` completes. A bad line ends the list: the records before it are
   * returned first, its error is thrown by this call if none precede it in this chunk, else by the
   * next `push` or `end` (as {@link BinaryListParser}).
   */
  push(chunk: Uint8Array): ParsedRecord[] {
    if (this.#failure !== undefined) throw this.#failure;
    const out: ParsedRecord[] = [];
    try {
      this.#scan(chunk, out);
      return out;
    } catch (e) {
      if (!(e instanceof ImaError)) throw e;
      this.#failure = e;
      if (out.length > 0) return out;
      throw e;
    }
  }

  /** Declares the end of the list: throws `IMA_TRUNCATED` if a line is incomplete, or a deferred error. */
  end(): void {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#pendingLength > 0) {
      throw new ImaError('IMA_TRUNCATED', `ASCII list ends inside a line (${this.#pendingLength} bytes without newline)`, {
        recordIndex: this.#records,
        byteOffset: this.#consumed,
      });
    }
  }

  #scan(chunk: Uint8Array, out: ParsedRecord[]): void {
    let from = 0;
    for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, from)) {
      const piece = chunk.subarray(from, nl + 1);
      const line = this.#pendingLength === 0 ? piece : concatBytes([...this.#pending, piece]);
      this.#pending = [];
      this.#pendingLength = 0;
      out.push(parseAsciiLine(line, this.#opts, this.#records, this.#consumed));
      this.#records++;
      this.#consumed += line.length;
      from = nl + 1;
    }
    if (from < chunk.length) {
      this.#pendingLength += chunk.length - from;
      if (this.#pendingLength > MAX_ASCII_LINE_LEN) {
        throw new ImaError('IMA_BAD_LENGTH', `ASCII line longer than ${MAX_ASCII_LINE_LEN} bytes`, {
          recordIndex: this.#records,
          byteOffset: this.#consumed,
        });
      }
      this.#pending.push(chunk.slice(from));
    }
  }
}

/** Parses a whole ASCII list (string: UTF-8 text; bytes: exact). */
export function parseAsciiList(list: string | Uint8Array, opts: AsciiOptions = {}): ParsedRecord[] {
  const parser = new AsciiListParser(opts);
  const records = parser.push(typeof list === 'string' ? utf8Encoder.encode(list) : list);
  parser.end();
  return records;
}
