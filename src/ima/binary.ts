/**
 * The binary measurement list (`binary_runtime_measurements[_<bank>]`, docs/ima-formats.md#binary-record):
 * a streaming parser and the record encoder.
 *
 * Record: `u32 pcr | digest[bank size] | u32 name_len | name | u32 data_len | data`, integers in
 * the list's byte order; the `ima` template has no `data_len` and its data is
 * `d (20) | u32 len | name`.
 */
import { DIGEST_SIZE, type BankMode, type BankName, type ImaRecord } from './record.js';
import { ImaError } from './errors.js';
import { concatBytes, latin1Bytes, latin1Text, readU32, writeU32, type Endian } from './hash.js';
import { templateDigest } from './digest.js';
import { IMA_D_SIZE, IMA_NAME_MAX, IMA_TEMPLATE } from './template.js';

/**
 * Longest template name accepted. Kernel names are built-in names (<= 10 chars) or a custom
 * template's format string, at most 15 field ids of <= 16 chars joined by `|` (ima.h
 * IMA_TEMPLATE_NUM_FIELDS_MAX, IMA_TEMPLATE_FIELD_ID_MAX_LEN): under 255.
 */
export const MAX_TEMPLATE_NAME_LEN = 255;

/**
 * Longest template data accepted: 8 MiB. The largest record a kernel can write is an `ima-buf`
 * KEY_CHECK record holding an add_key(2) payload, which the syscall caps at 1 MiB; `n-ng` is at
 * most 4097 bytes (PATH_MAX + NUL) and an xattr (sig, evmsig) at most 64 KiB (XATTR_SIZE_MAX).
 * The bound is 8x the largest real record, and it keeps a hostile length from buffering gigabytes.
 */
export const MAX_TEMPLATE_DATA_LEN = 8 * 1024 * 1024;

/**
 * A record as a binary list shows it. `digest` has the list's digest size (20 for the SHA-1 list,
 * which makes it an {@link ImaRecord}); `data` is in the list's byte order.
 */
export interface ParsedRecord {
  readonly pcr: number;
  readonly digest: Uint8Array;
  readonly template: string;
  readonly data: Uint8Array;
}

/** Options of a binary list: digest size of its bank and its byte order. */
export interface BinaryListOptions {
  /** Digest size of the list's bank: 20 (default, the SHA-1 list), 32, 48, 64. */
  readonly digestSize?: number;
  /** Byte order of the list's integers (default `le`, the canonical format). */
  readonly endian?: Endian;
}

/**
 * Receives one complete record from {@link BinaryListParser.pushEach}: `rec.digest` and `rec.data`
 * are views into the chunk (or the parser's buffer), valid only during the call.
 */
export type RecordVisitor = (rec: ParsedRecord) => void;

/** Receives where one complete record lies from {@link BinaryListParser.pushSpans}: `buf[at..next)`. */
export type RecordSpanVisitor = (buf: Uint8Array, at: number, next: number) => void;

/** Where a complete record lies in a buffer: `buf[at..next)`, its data from `dataAt`. */
type RecordSink = (buf: Uint8Array, at: number, dataAt: number, next: number, template: string) => void;

/** Pending-buffer capacity above which it is given back once the large record is parsed. */
const SHRINK_ABOVE = 1024 * 1024;

const NAME_ENCODINGS = new Map<string, Uint8Array>();

/**
 * Latin-1 bytes of a template name (cached: a list has a handful of names). The parser decodes
 * names as Latin-1 so any bytes round-trip; a name with characters beyond U+00FF cannot have come
 * from a list and throws `IMA_BAD_TEMPLATE`.
 */
function templateNameBytes(template: string): Uint8Array {
  let bytes = NAME_ENCODINGS.get(template);
  if (bytes === undefined) {
    bytes = latin1Bytes(template);
    if (latin1Text(bytes) !== template) throw new ImaError('IMA_BAD_TEMPLATE', `template name '${template.slice(0, 64)}' is not Latin-1`);
    if (NAME_ENCODINGS.size < 64) NAME_ENCODINGS.set(template, bytes);
  }
  return bytes;
}

/**
 * Streaming parser of a binary measurement list. Feed chunks of any size with {@link push}; it
 * returns the complete records and buffers a partial trailing record ("not yet", never an error).
 * {@link end} says whether the list ended on a record boundary.
 *
 * With `push`, each record's `digest` and `data` are views into one copy of that record's bytes,
 * so the caller may reuse its chunk buffers; {@link pushEach} lends views instead, for consumers
 * done with a record when their callback returns. Memory is bounded by one record
 * (<= {@link MAX_TEMPLATE_DATA_LEN}).
 */
export class BinaryListParser {
  readonly #digestSize: number;
  readonly #endian: Endian;
  /** Bytes of a record not yet complete, in `#pending[0..#pendingLength)`. */
  #pending = new Uint8Array(0);
  #pendingLength = 0;
  #records = 0;
  #consumed = 0;
  /** Last template name seen and its bytes: names repeat, decoding each one is wasted work. */
  #lastName = '';
  #lastNameBytes = new Uint8Array(0);
  /** The name seen before the last one. */
  #otherName = '';
  #otherNameBytes = new Uint8Array(0);
  /** The error that ended the list, thrown again by every later call. */
  #failure: { readonly error: unknown } | undefined;

  constructor(opts: BinaryListOptions = {}) {
    this.#digestSize = opts.digestSize ?? DIGEST_SIZE.sha1;
    this.#endian = opts.endian ?? 'le';
    if (!Object.values(DIGEST_SIZE).includes(this.#digestSize)) {
      throw new ImaError('IMA_BAD_LENGTH', `digest size ${this.#digestSize} is not a bank's (20, 32, 48, 64)`);
    }
  }

  /** Records returned so far. */
  get recordsParsed(): number {
    return this.#records;
  }

  /** Bytes of the complete records returned so far (= byte offset of the next record). */
  get bytesConsumed(): number {
    return this.#consumed;
  }

  /** Bytes held of a record not yet complete. */
  get bufferedBytes(): number {
    return this.#pendingLength;
  }

  /**
   * Parses what `chunk` completes. A record with an impossible length field (`IMA_BAD_LENGTH`)
   * ends the list: the records before it are returned first, and the error is thrown by this call
   * if none precede it in this chunk, else by the next `push` or `end` (and every call after).
   */
  push(chunk: Uint8Array): ParsedRecord[] {
    const out: ParsedRecord[] = [];
    const endian = this.#endian;
    const d = this.#digestSize;
    try {
      this.#feed(chunk, (buf, at, dataAt, next, template) => {
        // The typed-array slice, which copies: Buffer's own slice() makes a view, which would tie
        // the record to a chunk the caller may reuse (and keep the whole chunk alive).
        const bytes = Uint8Array.prototype.slice.call(buf, at, next);
        out.push({ pcr: readU32(bytes, 0, endian), digest: bytes.subarray(4, 4 + d), template, data: bytes.subarray(dataAt - at) });
      });
      return out;
    } catch (e) {
      if (!(e instanceof ImaError) || out.length === 0) throw e;
      return out;
    }
  }

  /**
   * Like {@link push}, but hands each complete record to `visit` as views (no copy, no array:
   * a replay that consumes records as they come keeps no garbage alive, so memory stays flat).
   * Returns the number of records visited. A length error is thrown once the records before it
   * have been visited; an error thrown by `visit` propagates. Either ends the list: every later
   * call throws it again.
   */
  pushEach(chunk: Uint8Array, visit: RecordVisitor): number {
    const before = this.#records;
    const endian = this.#endian;
    const d = this.#digestSize;
    this.#feed(chunk, (buf, at, dataAt, next, template) => {
      // Views made with the constructor: 2-3x cheaper than subarray() (no species lookup), which
      // shows at two views per record.
      const base = buf.byteOffset;
      visit({
        pcr: readU32(buf, at, endian),
        digest: new Uint8Array(buf.buffer, base + at + 4, d),
        template,
        data: new Uint8Array(buf.buffer, base + dataAt, next - dataAt),
      });
    });
    return this.#records - before;
  }

  /**
   * Like {@link pushEach}, but hands out where each complete record lies, `buf[at..next)`, instead
   * of views: `buf` is `chunk` itself, or the parser's own buffer for a record completed from
   * bytes of earlier chunks (valid only during the call). No allocation per record: a reader that
   * keeps whole records as the bytes it read (they already are the SHA-1 binary list a chunk
   * stores) merges adjacent spans into runs.
   */
  pushSpans(chunk: Uint8Array, visit: RecordSpanVisitor): number {
    const before = this.#records;
    this.#feed(chunk, (buf, at, _dataAt, next) => visit(buf, at, next));
    return this.#records - before;
  }

  /**
   * Like {@link pushEach} with nothing to visit: counts the records `chunk` completes, checking
   * every length field, without making a view or a copy. A stored chunk's body is served as it is
   * (it already is the SHA-1 binary list), so serving checks its shape this way instead of parsing
   * it (bench/results/lean.md).
   */
  measure(chunk: Uint8Array): number {
    const before = this.#records;
    this.#feed(chunk, countOnly);
    return this.#records - before;
  }

  /** Scans what `chunk` completes into `sink`, keeps the incomplete rest; any error ends the list. */
  #feed(chunk: Uint8Array, sink: RecordSink): void {
    if (this.#failure !== undefined) throw this.#failure.error;
    try {
      const from = this.#pendingLength === 0 ? 0 : this.#completePending(chunk, sink);
      if (from < 0) return;
      const used = this.#scan(chunk, from, chunk.length, sink);
      this.#keep(chunk.subarray(used));
    } catch (e) {
      this.#failure = { error: e };
      throw e;
    }
  }

  /**
   * Completes the record begun in `#pending` with the head of `chunk`, copying about that record's
   * bytes only (growing steps), not the whole chunk: a list read into large chunks is then scanned
   * in place, and memory stays one record. Returns the offset in `chunk` after the records
   * completed, or -1 if the chunk did not complete one (all of it is then kept).
   */
  #completePending(chunk: Uint8Array, sink: RecordSink): number {
    let taken = 0;
    for (let step = 256; ; step *= 2) {
      const take = Math.min(chunk.length - taken, step);
      this.#keep(chunk.subarray(taken, taken + take));
      taken += take;
      const used = this.#scan(this.#pending, 0, this.#pendingLength, sink);
      if (used > 0) {
        // The bytes after the completed records came from `chunk`: scan them there.
        const from = taken - (this.#pendingLength - used);
        this.#pendingLength = 0;
        // Let a buffer grown for one large record go, so memory stays one ordinary record.
        if (this.#pending.length > SHRINK_ABOVE) this.#pending = new Uint8Array(0);
        return from;
      }
      if (taken === chunk.length) return -1;
    }
  }

  /**
   * Declares the end of the list: throws `IMA_TRUNCATED` if it ended inside a record, or the
   * error a previous `push` deferred.
   */
  end(): void {
    if (this.#failure !== undefined) throw this.#failure.error;
    if (this.#pendingLength > 0) {
      throw new ImaError(
        'IMA_TRUNCATED',
        `binary list ends inside a record: ${this.#pendingLength} bytes of an incomplete record`,
        { recordIndex: this.#records, byteOffset: this.#consumed },
      );
    }
  }

  /** Appends bytes to the pending buffer, growing it by doubling (amortized linear). */
  #keep(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    const needed = this.#pendingLength + bytes.length;
    if (needed > this.#pending.length) {
      const grown = new Uint8Array(Math.max(needed, this.#pending.length * 2, 256));
      grown.set(this.#pending.subarray(0, this.#pendingLength));
      this.#pending = grown;
    }
    this.#pending.set(bytes, this.#pendingLength);
    this.#pendingLength = needed;
  }

  #bad(message: string): ImaError {
    return new ImaError('IMA_BAD_LENGTH', message, { recordIndex: this.#records, byteOffset: this.#consumed });
  }

  /**
   * Parses complete records of `buf[from..end)` into `sink`; returns the offset after the last
   * one. Lengths are checked as soon as they are readable, so a hostile length fails before its
   * bytes arrive.
   */
  #scan(buf: Uint8Array, from: number, end: number, sink: RecordSink): number {
    const d = this.#digestSize;
    const endian = this.#endian;
    let at = from;
    for (;;) {
      const nameAt = at + 4 + d + 4;
      if (nameAt > end) return at;
      const nameLen = readU32(buf, nameAt - 4, endian);
      if (nameLen === 0 || nameLen > MAX_TEMPLATE_NAME_LEN) {
        throw this.#bad(`template name length ${nameLen} outside 1..${MAX_TEMPLATE_NAME_LEN}`);
      }
      const lenAt = nameAt + nameLen;
      if (lenAt > end) return at;
      const template = this.#name(buf, nameAt, lenAt);
      let dataAt: number;
      let dataLen: number;
      if (template === IMA_TEMPLATE) {
        // `ima`: d (20) then `n` as u32 strlen + name, no data length (docs/ima-formats.md#binary-record, #templates-and-fields).
        dataAt = lenAt;
        if (dataAt + IMA_D_SIZE + 4 > end) return at;
        const fileNameLen = readU32(buf, dataAt + IMA_D_SIZE, endian);
        if (fileNameLen > IMA_NAME_MAX) throw this.#bad(`'ima' file name length ${fileNameLen} > ${IMA_NAME_MAX}`);
        dataLen = IMA_D_SIZE + 4 + fileNameLen;
      } else {
        dataAt = lenAt + 4;
        if (dataAt > end) return at;
        dataLen = readU32(buf, lenAt, endian);
        if (dataLen === 0 || dataLen > MAX_TEMPLATE_DATA_LEN) {
          throw this.#bad(`template data length ${dataLen} outside 1..${MAX_TEMPLATE_DATA_LEN}`);
        }
      }
      const next = dataAt + dataLen;
      if (next > end) return at;
      sink(buf, at, dataAt, next, template);
      this.#records++;
      this.#consumed += next - at;
      at = next;
    }
  }

  /**
   * The template name in `buf[from..to)`, compared in place with the last two (no allocation when
   * it is one of them). Two, because lists interleave templates (`ima-sig` or `ima-ng` records with
   * `ima-buf` ones): with one, every change decoded the name again, 13 % of the CPU of serving a
   * stored `mixed` list (80 % ima-sig, 20 % ima-buf; bench/results/lean.md).
   */
  #name(buf: Uint8Array, from: number, to: number): string {
    if (sameBytes(buf, from, to, this.#lastNameBytes)) return this.#lastName;
    const [otherName, otherBytes] = [this.#otherName, this.#otherNameBytes];
    this.#otherName = this.#lastName;
    this.#otherNameBytes = this.#lastNameBytes;
    if (sameBytes(buf, from, to, otherBytes)) {
      this.#lastName = otherName;
      this.#lastNameBytes = otherBytes;
    } else {
      this.#lastNameBytes = buf.slice(from, to);
      this.#lastName = latin1Text(this.#lastNameBytes);
    }
    return this.#lastName;
  }
}

/** `buf[from..to)` holds exactly `bytes`. */
function sameBytes(buf: Uint8Array, from: number, to: number, bytes: Uint8Array): boolean {
  if (to - from !== bytes.length) return false;
  for (let i = 0; i < bytes.length; i++) if (buf[from + i] !== bytes[i]) return false;
  return true;
}

/** The sink of {@link BinaryListParser.measure}: the scan itself counts records and bytes. */
function countOnly(): void {}

/**
 * Bytes of a parsed record in its binary list: pcr, digest, name length, name, data length (none
 * for the `ima` template), data (docs/ima-formats.md#binary-record).
 */
export function binaryRecordLength(rec: ParsedRecord): number {
  return 4 + rec.digest.length + 4 + rec.template.length + (rec.template === IMA_TEMPLATE ? 0 : 4) + rec.data.length;
}

/**
 * Byte offset of record `n` in a whole binary list (the length of its first `n` records), walked
 * through the parser's views; throws `RangeError` if the list holds fewer than `n` records.
 */
export function listByteOffset(list: Uint8Array, n: number, opts: BinaryListOptions = {}): number {
  let bytes = 0;
  let seen = 0;
  new BinaryListParser(opts).pushEach(list, (rec) => {
    if (seen++ < n) bytes += binaryRecordLength(rec);
  });
  if (seen < n) throw new RangeError(`the list holds ${seen} records, not ${n}`);
  return bytes;
}

/** Parses a whole binary list; throws `IMA_TRUNCATED` if it ends inside a record. */
export function parseBinaryList(bytes: Uint8Array, opts: BinaryListOptions = {}): ParsedRecord[] {
  const parser = new BinaryListParser(opts);
  const records = parser.push(bytes);
  parser.end();
  return records;
}

/** How to encode a record: which bank's list, the bank's mode, the list's byte order. */
export interface EncodeOptions {
  readonly bank?: BankName;
  readonly mode?: BankMode;
  /** Byte order of the list the record's data came from; the header integers follow it. */
  readonly endian?: Endian;
}

/**
 * The record exactly as `binary_runtime_measurements[_<bank>]` shows it, with the bank's template
 * digest derived (docs/ima-formats.md#binary-record, #template-digest). The data are written as they are: they carry their
 * list's byte order (see `convertTemplateData` to rewrite it). Throws `IMA_BAD_LENGTH` for a
 * record the parser would refuse.
 */
export function encodeBinaryRecord(rec: ImaRecord, opts: EncodeOptions = {}): Uint8Array {
  const out = new Uint8Array(encodedRecordLength(rec, opts));
  encodeBinaryRecordInto(rec, out, 0, opts);
  return out;
}

/** Bytes {@link encodeBinaryRecord} makes of `rec` (throws `IMA_BAD_LENGTH` as it does). */
export function encodedRecordLength(rec: ImaRecord, opts: EncodeOptions = {}): number {
  const name = encodableName(rec, opts.endian ?? 'le');
  return 4 + DIGEST_SIZE[opts.bank ?? 'sha1'] + 4 + name.length + (rec.template === IMA_TEMPLATE ? 0 : 4) + rec.data.length;
}

/**
 * {@link encodeBinaryRecord} written into `out` at `at` (which must have room: see
 * {@link encodedRecordLength}); returns the bytes written. What appends records to one buffer (a
 * chunk) uses this, so a record costs no allocation of its own (bench/results/lean.md).
 */
export function encodeBinaryRecordInto(rec: ImaRecord, out: Uint8Array, at: number, opts: EncodeOptions = {}): number {
  const endian = opts.endian ?? 'le';
  const bank = opts.bank ?? 'sha1';
  const name = encodableName(rec, endian);
  const start = at;
  writeU32(out, at, rec.pcr, endian);
  // The SHA-1 list shows the record's own digest (zero for a violation): no derivation, no copy.
  const digest = bank === 'sha1' ? rec.digest : templateDigest(rec, bank, opts.mode ?? 'native', endian);
  out.set(digest, at + 4);
  at += 4 + digest.length;
  writeU32(out, at, name.length, endian);
  out.set(name, at + 4);
  at += 4 + name.length;
  if (rec.template !== IMA_TEMPLATE) {
    writeU32(out, at, rec.data.length, endian);
    at += 4;
  }
  out.set(rec.data, at);
  return at + rec.data.length - start;
}

/** The template name's bytes, once the record is known to be encodable; else `IMA_BAD_LENGTH`. */
function encodableName(rec: ImaRecord, endian: Endian): Uint8Array {
  const name = templateNameBytes(rec.template);
  if (name.length === 0 || name.length > MAX_TEMPLATE_NAME_LEN) {
    throw new ImaError('IMA_BAD_LENGTH', `template name length ${name.length} outside 1..${MAX_TEMPLATE_NAME_LEN}`);
  }
  if (rec.digest.length !== DIGEST_SIZE.sha1) {
    throw new ImaError('IMA_BAD_LENGTH', `SHA-1 template digest of ${rec.digest.length} bytes, not ${DIGEST_SIZE.sha1}`);
  }
  const isIma = rec.template === IMA_TEMPLATE;
  if (!(isIma ? isImaTemplateData(rec.data, endian) : rec.data.length > 0 && rec.data.length <= MAX_TEMPLATE_DATA_LEN)) {
    throw new ImaError('IMA_BAD_LENGTH', `template data length ${rec.data.length} not encodable for '${rec.template}'`);
  }
  return name;
}

/** True if `data` has the shape the parser reads for the `ima` template: d (20) | u32 len | name. */
function isImaTemplateData(data: Uint8Array, endian: Endian): boolean {
  const head = IMA_D_SIZE + 4;
  return data.length >= head && data.length - head <= IMA_NAME_MAX && readU32(data, IMA_D_SIZE, endian) === data.length - head;
}

/** A whole binary list of `records` (see {@link encodeBinaryRecord}). */
export function encodeBinaryList(records: Iterable<ImaRecord>, opts: EncodeOptions = {}): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const rec of records) parts.push(encodeBinaryRecord(rec, opts));
  return concatBytes(parts);
}
