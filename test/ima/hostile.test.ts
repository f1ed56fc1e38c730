/**
 * Hostile and damaged input: truncation at every byte, impossible length fields, unknown templates,
 * random garbage. Each gives a typed ImaError (code asserted) or a clean parse, in bounded time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  AsciiListParser,
  BinaryListParser,
  ImaError,
  MAX_TEMPLATE_DATA_LEN,
  convertTemplateData,
  decodeTemplateFields,
  encodeBinaryList,
  encodeBinaryRecord,
  formatAsciiLine,
  formatAsciiLineBytes,
  parseAsciiLine,
  parseBinaryList,
  toHex,
  type ImaErrorCode,
  type ImaRecord,
} from '../../src/ima/index.js';
import { allCaptures } from './_fixtures.js';

const captures = allCaptures();

function isImaError(code: ImaErrorCode, fields: { recordIndex?: number; byteOffset?: number } = {}) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof ImaError, `not an ImaError: ${String(e)}`);
    assert.equal(e.code, code);
    if (fields.recordIndex !== undefined) assert.equal(e.recordIndex, fields.recordIndex);
    if (fields.byteOffset !== undefined) assert.equal(e.byteOffset, fields.byteOffset);
    return true;
  };
}

/** Byte offset where each record starts, and the total. */
function recordOffsets(bytes: Uint8Array): number[] {
  const offsets = [0];
  for (const r of parseBinaryList(bytes)) offsets.push((offsets[offsets.length - 1] ?? 0) + encodeBinaryRecord(r).length);
  return offsets;
}

for (const c of captures) {
  test(`${c.name}: truncated at every byte offset → complete records, then IMA_TRUNCATED at the right offset`, () => {
    const offsets = recordOffsets(c.binary);
    for (let n = 0; n <= c.binary.length; n++) {
      const parser = new BinaryListParser();
      const records = parser.push(c.binary.slice(0, n));
      const complete = offsets.filter((o) => o <= n).length - 1;
      assert.equal(records.length, complete);
      const boundary = offsets[complete] ?? -1;
      assert.equal(parser.bytesConsumed, boundary);
      assert.equal(parser.bufferedBytes, n - boundary);
      if (n === boundary) parser.end();
      else assert.throws(() => parser.end(), isImaError('IMA_TRUNCATED', { recordIndex: complete, byteOffset: boundary }));
    }
  });

  test(`${c.name}: ASCII list truncated at every byte → complete lines, then IMA_TRUNCATED at the last line end`, () => {
    const lineEnds = [...c.ascii.keys()].filter((i) => c.ascii[i] === 0x0a);
    for (let n = 0; n <= c.ascii.length; n++) {
      const parser = new AsciiListParser();
      const records = parser.push(c.ascii.slice(0, n));
      assert.equal(records.length, lineEnds.filter((i) => i < n).length);
      if (n === 0 || c.ascii[n - 1] === 0x0a) parser.end();
      else assert.throws(() => parser.end(), isImaError('IMA_TRUNCATED', { recordIndex: records.length, byteOffset: parser.bytesConsumed }));
    }
  });
}

/** The second record of the short capture, and its offsets: name length at +24, data length after the name. */
const base = captures[0];
assert.ok(base !== undefined);
const records = parseBinaryList(base.binary);
const [first = records[0], second = records[0]] = records;
assert.ok(first !== undefined && second !== undefined);
const secondAt = encodeBinaryRecord(first).length;

function withU32(bytes: Uint8Array, at: number, value: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  new DataView(out.buffer).setUint32(at, value, true);
  return out;
}

for (const value of [0, 0xffffffff, 256]) {
  test(`template name length ${value} → IMA_BAD_LENGTH at the record's offset`, () => {
    const bad = withU32(base.binary, secondAt + 24, value);
    const parser = new BinaryListParser();
    // The record before the bad one comes first; the error follows, and stays.
    assert.deepEqual(parser.push(bad).map((r) => toHex(r.data)), [toHex(first.data)]);
    assert.throws(() => parser.end(), isImaError('IMA_BAD_LENGTH', { recordIndex: 1, byteOffset: secondAt }));
    assert.throws(() => parser.push(new Uint8Array(1)), isImaError('IMA_BAD_LENGTH', { recordIndex: 1, byteOffset: secondAt }));
    assert.throws(() => parseBinaryList(bad), isImaError('IMA_BAD_LENGTH', { recordIndex: 1, byteOffset: secondAt }));
  });
}

for (const value of [0, 0xffffffff, MAX_TEMPLATE_DATA_LEN + 1]) {
  test(`template data length ${value} → IMA_BAD_LENGTH as soon as the length is readable`, () => {
    const dataLenAt = secondAt + 24 + 4 + second.template.length;
    const bad = withU32(base.binary, dataLenAt, value);
    const parser = new BinaryListParser();
    // Only the header: a hostile length fails before its bytes arrive, with little buffered.
    assert.equal(parser.push(bad.slice(0, dataLenAt)).length, 1);
    assert.throws(() => parser.push(bad.slice(dataLenAt, dataLenAt + 4)), isImaError('IMA_BAD_LENGTH', { recordIndex: 1, byteOffset: secondAt }));
  });
}

test('a template name longer than what remains is "not yet", then IMA_TRUNCATED at end', () => {
  const bad = withU32(base.binary, secondAt + 24, 200).slice(0, secondAt + 100);
  const parser = new BinaryListParser();
  assert.equal(parser.push(bad).length, 1);
  assert.throws(() => parser.end(), isImaError('IMA_TRUNCATED', { recordIndex: 1, byteOffset: secondAt }));
});

test("an 'ima' record with a file name length over 255 → IMA_BAD_LENGTH; a valid one round-trips", () => {
  const name = Buffer.from('/usr/bin/true');
  const d = Buffer.alloc(20, 7);
  const data = Buffer.concat([d, Buffer.from([name.length, 0, 0, 0]), name]);
  const rec: ImaRecord = { pcr: 10, digest: Buffer.alloc(20, 1), template: 'ima', data };
  const bytes = encodeBinaryRecord(rec);
  assert.equal(bytes.length, 4 + 20 + 4 + 3 + data.length); // no data-length field
  assert.deepEqual(
    parseBinaryList(bytes).map((r) => toHex(r.data)),
    [toHex(data)],
  );
  assert.equal(formatAsciiLine(rec), `10 ${'01'.repeat(20)} ima ${'07'.repeat(20)} /usr/bin/true\n`);
  const bad = withU32(bytes, 4 + 20 + 4 + 3 + 20, 256);
  assert.throws(() => parseBinaryList(bad), isImaError('IMA_BAD_LENGTH', { recordIndex: 0, byteOffset: 0 }));
});

test('unknown templates are kept raw: binary round trip, guessed ASCII fields, ASCII parse refused', () => {
  const fields = [Buffer.from('sha256:\0abcd', 'latin1'), Buffer.from('/etc/x\0'), Buffer.from([1, 2, 3])];
  const data = Buffer.concat(fields.flatMap((f) => [Buffer.from([f.length, 0, 0, 0]), f]));
  const rec: ImaRecord = { pcr: 11, digest: Buffer.alloc(20, 2), template: 'ima-future', data };
  const bytes = encodeBinaryList([rec]);
  assert.deepEqual(
    parseBinaryList(bytes).map((r) => [r.template, toHex(r.data)]),
    [['ima-future', toHex(data)]],
  );
  const decoded = decodeTemplateFields(rec);
  assert.equal(decoded.fieldIds, null);
  assert.deepEqual(decoded.fields.map((f) => [f.id, toHex(f.bytes)]), fields.map((f) => ['unknown', toHex(f)]));
  const line = formatAsciiLine(rec);
  assert.equal(line, `11 ${'02'.repeat(20)} ima-future sha256:61626364 /etc/x 010203\n`);
  assert.throws(() => parseAsciiLine(line), isImaError('IMA_BAD_ASCII'));
  // Data that do not split into fields: kept in binary, refused in ASCII.
  const opaque: ImaRecord = { ...rec, data: Buffer.from([9, 9, 9]) };
  assert.deepEqual(parseBinaryList(encodeBinaryRecord(opaque)).map((r) => toHex(r.data)), ['090909']);
  assert.deepEqual(decodeTemplateFields(opaque).fields.map((f) => toHex(f.bytes)), ['090909']);
  assert.throws(() => formatAsciiLine(opaque), isImaError('IMA_BAD_TEMPLATE'));
});

test('a known template whose data do not split → IMA_BAD_TEMPLATE for fields and ASCII, binary unaffected', () => {
  const rec: ImaRecord = { ...second, data: second.data.subarray(0, second.data.length - 1) };
  assert.equal(parseBinaryList(encodeBinaryRecord(rec)).length, 1);
  assert.throws(() => decodeTemplateFields(rec), isImaError('IMA_BAD_TEMPLATE'));
  assert.throws(() => formatAsciiLineBytes(rec, {}, 5), isImaError('IMA_BAD_TEMPLATE', { recordIndex: 5 }));
});

test('big-endian list: header and field lengths big-endian, same digests as the data shown', () => {
  const be = records.map((r) => ({ ...r, data: convertTemplateData(r.template, r.data, 'le', 'be') }));
  const bytes = encodeBinaryList(be, { endian: 'be' });
  assert.deepEqual(Array.from(bytes.subarray(0, 4)), [0, 0, 0, 10]);
  const parsed = parseBinaryList(bytes, { endian: 'be' });
  assert.deepEqual(parsed.map((r) => toHex(r.data)), be.map((r) => toHex(r.data)));
  assert.equal(
    parsed.map((r) => formatAsciiLine(r, { endian: 'be' })).join(''),
    records.map((r) => formatAsciiLine(r)).join(''),
  );
  assert.throws(() => parseBinaryList(bytes), isImaError('IMA_BAD_LENGTH', { recordIndex: 0, byteOffset: 0 }));
});

test('a digest size that is no bank\'s → IMA_BAD_LENGTH', () => {
  assert.throws(() => new BinaryListParser({ digestSize: 21 }), isImaError('IMA_BAD_LENGTH'));
});

const CODES = new Set<string>(['IMA_TRUNCATED', 'IMA_BAD_LENGTH', 'IMA_BAD_TEMPLATE', 'IMA_BAD_ASCII']);

/**
 * Parse, decode, format any bytes. The only failures allowed are typed ImaErrors, and each one is
 * exact: its record index is the number of records before it, its byte offset where that record
 * starts, so the bytes before the offset parse cleanly into exactly that many records. A clean
 * parse re-encodes to the same bytes. Data that do not split into a template's fields may fail
 * decoding or ASCII with IMA_BAD_TEMPLATE only.
 */
function digestAll(bytes: Uint8Array): string {
  let parsed: ImaRecord[];
  try {
    parsed = parseBinaryList(bytes);
  } catch (e) {
    if (!(e instanceof ImaError) || !CODES.has(e.code)) throw e;
    assert.ok(e.byteOffset !== undefined && e.recordIndex !== undefined, `${e.code} without its position`);
    assert.equal(parseBinaryList(bytes.subarray(0, e.byteOffset)).length, e.recordIndex);
    return e.code;
  }
  assert.equal(toHex(encodeBinaryList(parsed)), toHex(bytes), 'a clean parse re-encodes to the same bytes');
  for (const r of parsed) {
    attempt(() => decodeTemplateFields(r));
    attempt(() => formatAsciiLineBytes(r));
  }
  return 'ok';
}

/** 'ok', or the code of the ImaError `f` throws (anything else is rethrown). */
function attempt(f: () => unknown): string {
  try {
    f();
    return 'ok';
  } catch (e) {
    if (e instanceof ImaError && e.code === 'IMA_BAD_TEMPLATE') return e.code;
    throw e;
  }
}

test('random garbage and random splices of real logs: typed errors at exact positions, or clean parses', () => {
  const seen = new Map<string, number>();
  const tally = (result: string): void => void seen.set(result, (seen.get(result) ?? 0) + 1);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 4096 }), (garbage) => tally(digestAll(garbage))),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.constantFrom(...captures), fc.nat(), fc.uint8Array({ maxLength: 64 }), (c, at, insert) => {
      const cut = at % (c.binary.length + 1);
      tally(digestAll(Buffer.concat([c.binary.subarray(0, cut), insert, c.binary.subarray(cut)])));
    }),
    { numRuns: 500 },
  );
  // Both outcomes were exercised, so neither branch of digestAll went unchecked.
  assert.ok((seen.get('ok') ?? 0) > 0 && (seen.get('IMA_BAD_LENGTH') ?? 0) + (seen.get('IMA_TRUNCATED') ?? 0) > 0, JSON.stringify([...seen]));
});

test('a bad ASCII line ends the list: the lines before it come first, then IMA_BAD_ASCII', () => {
  const c = captures[0];
  assert.ok(c !== undefined);
  const text = Buffer.from(c.ascii).toString('latin1').split('\n');
  text[3] = `10 zz ${text[3]?.slice(6) ?? ''}`;
  const parser = new AsciiListParser();
  assert.equal(parser.push(Buffer.from(text.join('\n'), 'latin1')).length, 3);
  assert.throws(() => parser.end(), isImaError('IMA_BAD_ASCII', { recordIndex: 3 }));
});

test('random ASCII lines: IMA_BAD_ASCII or a record, never another exception', () => {
  const tokens = fc.constantFrom('10', ' 9', 'ima-ng', 'ima-sig', 'ima', 'sha256:00ff', 'abc', '', 'ZZ', '/x', 'ima-buf', '-1', 'd-ng|n-ng', '00'.repeat(20));
  fc.assert(
    fc.property(fc.array(tokens, { maxLength: 8 }), (parts) => {
      try {
        const rec = parseAsciiLine(`${parts.join(' ')}\n`);
        assert.equal(rec.digest.length, 20);
      } catch (e) {
        assert.ok(e instanceof ImaError && e.code === 'IMA_BAD_ASCII', String(e));
      }
    }),
    { numRuns: 1000 },
  );
});

test('the largest accepted record (MAX_TEMPLATE_DATA_LEN bytes of data) streams through in 64 KiB chunks', () => {
  const fields = [Buffer.concat([Buffer.from('sha256:', 'latin1'), Buffer.alloc(33)]), Buffer.from('k\0')];
  const prefix = fields.reduce((n, f) => n + 4 + f.length, 0);
  const buf = new Uint8Array(MAX_TEMPLATE_DATA_LEN - prefix - 4);
  const data = Buffer.concat([...fields, buf].flatMap((f) => [Buffer.from(Uint32Array.of(f.length).buffer), f]));
  assert.equal(data.length, MAX_TEMPLATE_DATA_LEN);
  const rec: ImaRecord = { pcr: 10, digest: Buffer.alloc(20, 3), template: 'ima-buf', data };
  const bytes = encodeBinaryList([rec, rec]);
  const parser = new BinaryListParser();
  const out: string[] = [];
  for (let at = 0; at < bytes.length; at += 65536) out.push(...parser.push(bytes.subarray(at, at + 65536)).map((r) => r.template));
  parser.end();
  assert.deepEqual(out, ['ima-buf', 'ima-buf']);
  assert.equal(parser.bytesConsumed, bytes.length);
});
