/**
 * replayFile: worker threads (a share of the banks each, chunks through a shared ring) give exactly
 * the PCR values and errors of one thread, on the real captures, generated lists (every template,
 * violations, several PCRs, big-endian, ASCII, the sha256 list, checkpoints) and damaged lists.
 * Also the parser's borrowed-view path (pushEach) and the bank split (planShares).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BinaryListParser, ImaError, PcrReplay, concatBytes, encodeBinaryRecord, formatAsciiLineBytes, parseBinaryList, replayFile, toHex, type Endian, type ImaRecord, type ListStreamOptions, type PcrReplayOptions } from '../../src/ima/index.js';
import { allCaptures, pcrBytes, recordsAsHex } from './_fixtures.js';
import { ImaWorkload, digestNgField, makeRecord, nameNgField, planShares, readFileChunks } from '../../src/testing/index.js';

const captures = allCaptures();
const dir = mkdtempSync(join(tmpdir(), 'imakeep-replay-file-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function fileOf(bytes: Uint8Array): string {
  const path = join(dir, `list-${files++}`);
  writeFileSync(path, bytes);
  return path;
}

/** Every bank native with verification, and the non-SHA-1 banks padded: what `replay --expect` runs. */
const ALL_BANKS: PcrReplayOptions[] = [
  { banks: { sha1: 'native', sha256: 'native', sha384: 'native', sha512: 'native' } },
  { banks: { sha256: 'padded', sha384: 'padded', sha512: 'padded' }, verifyDigests: false },
];
const SHA1_SHA256: PcrReplayOptions[] = [{ banks: { sha1: 'native', sha256: 'native' } }];

/** The replays' states as hex (comparable with deepEqual), or the error's code, message and place. */
type Outcome =
  | { readonly states: unknown[] }
  | { readonly code: string; readonly message: string; readonly recordIndex: number | undefined; readonly byteOffset: number | undefined };

function statesOf(replays: readonly PcrReplay[]): unknown[] {
  return replays.map((r) => {
    const s = r.toState();
    return { recordCount: s.recordCount, banks: s.banks.map((b) => ({ ...b, pcrs: b.pcrs.map((p) => ({ pcr: p.pcr, value: toHex(p.value) })) })) };
  });
}

function errorOutcome(e: unknown): Outcome {
  if (!(e instanceof ImaError)) throw e;
  return { code: e.code, message: e.message, recordIndex: e.recordIndex, byteOffset: e.byteOffset };
}

async function outcome(path: string, plan: readonly PcrReplayOptions[], opts: Parameters<typeof replayFile>[2]): Promise<Outcome> {
  try {
    return { states: statesOf(await replayFile(path, plan, opts)) };
  } catch (e) {
    return errorOutcome(e);
  }
}

/**
 * The reference: the list's records (BinaryListParser.push, which returns the records before a
 * length error and defers it), then PcrReplay.extend record by record, then the end of the list:
 * the pre-replayFile path, in which a record's error comes before a later record's.
 */
function referenceOutcome(bytes: Uint8Array, plan: readonly PcrReplayOptions[], endian: Endian = 'le'): Outcome {
  try {
    const replays = plan.map((p) => new PcrReplay(p));
    const parser = new BinaryListParser({ endian });
    for (const rec of parser.push(bytes)) for (const r of replays) r.extend(rec);
    parser.end();
    return { states: statesOf(replays) };
  } catch (e) {
    return errorOutcome(e);
  }
}

/**
 * Asserts that one thread (default and tiny chunks) and 2-4 workers with chunks that split records
 * everywhere (97 bytes: smaller than most records; 1000 bytes through a 4-slot ring: the reader waits
 * for the workers) all give `expected`.
 */
async function assertSameEverywhere(path: string, plan: readonly PcrReplayOptions[], expected: Outcome, list: ListStreamOptions = {}): Promise<void> {
  const runs: [string, Parameters<typeof replayFile>[2]][] = [
    ['1 thread', { ...list, threads: 1 }],
    ['1 thread, 97-byte chunks', { ...list, threads: 1, chunkBytes: 97 }],
    ['2 workers, 97-byte chunks', { ...list, threads: 2, chunkBytes: 97 }],
    ['2 workers, 1000-byte chunks', { ...list, threads: 2, chunkBytes: 1000 }],
    ['4 workers, 4096-byte chunks', { ...list, threads: 4, chunkBytes: 4096 }],
  ];
  for (const [name, opts] of runs) assert.deepEqual(await outcome(path, plan, opts), expected, name);
}

/** Records of every template, violations, PCRs 10 and 11 interleaved, in `endian`. */
function mixedRecords(count: number, endian: Endian = 'le'): ImaRecord[] {
  const pcr10 = new ImaWorkload({ seed: 7, template: 'mixed', violationRate: 0.1, endian });
  const pcr11 = new ImaWorkload({ seed: 8, template: 'ima-ng', violationRate: 0.2, pcr: 11, bootAggregate: false, endian });
  const out: ImaRecord[] = [];
  for (let i = 0; i < count; i++) {
    if (i % 7 === 3) out.push(pcr11.next());
    else if (i % 11 === 5) out.push(makeRecord('ima', [new Uint8Array(20).fill(i), nameNgField(`/usr/bin/tool-${i}`).subarray(0, -1)], { endian, violation: i % 22 === 5 }));
    else out.push(pcr10.next());
  }
  return out;
}

function binaryList(records: readonly ImaRecord[], endian: Endian = 'le'): Uint8Array {
  return concatBytes(records.map((r) => encodeBinaryRecord(r, { endian })));
}

for (const c of captures) {
  test(`${c.name}: workers and one thread give the capture's PCR values, every bank and mode`, async () => {
    const path = fileOf(c.binary);
    const expected = referenceOutcome(c.binary, ALL_BANKS);
    await assertSameEverywhere(path, ALL_BANKS, expected);
    const [native] = await replayFile(path, SHA1_SHA256, { threads: 2, chunkBytes: 97 });
    assert.ok(native !== undefined);
    assert.equal(native.recordCount, c.count);
    assert.deepEqual(native.value('sha1', 10), pcrBytes(c, 'sha1', 10));
    assert.deepEqual(native.value('sha256', 10), pcrBytes(c, 'sha256', 10));
  });

  test(`${c.name}: the ASCII list through workers gives the binary list's values`, async () => {
    const expected = referenceOutcome(c.binary, SHA1_SHA256);
    await assertSameEverywhere(fileOf(c.ascii), SHA1_SHA256, expected, { format: 'ascii' });
  });
}

test('generated list: every template, violations, PCRs 10 and 11, 4 banks, both modes', async () => {
  const records = mixedRecords(600);
  assert.ok(records.some((r) => r.pcr === 11) && records.some((r) => r.template === 'ima') && records.some((r) => r.template === 'ima-buf'));
  assert.ok(records.filter((r) => r.digest.every((b) => b === 0)).length > 20, 'violations present');
  const bytes = binaryList(records);
  const expected = referenceOutcome(bytes, ALL_BANKS);
  assert.ok('states' in expected);
  await assertSameEverywhere(fileOf(bytes), ALL_BANKS, expected);
});

test('generated list: big-endian, and the sha256 list (digests recomputed in each worker)', async () => {
  const be = mixedRecords(300, 'be');
  const beBytes = binaryList(be, 'be');
  const plan: PcrReplayOptions[] = [{ banks: { sha1: 'native', sha256: 'native', sha512: 'native' }, endian: 'be' }];
  await assertSameEverywhere(fileOf(beBytes), plan, referenceOutcome(beBytes, plan, 'be'), { endian: 'be' });

  const le = mixedRecords(300);
  const sha256List = concatBytes(le.map((r) => encodeBinaryRecord(r, { bank: 'sha256' })));
  await assertSameEverywhere(fileOf(sha256List), SHA1_SHA256, referenceOutcome(binaryList(le), SHA1_SHA256), { bank: 'sha256' });
});

test('checkpoint: start values and record count carry through the workers', async () => {
  const records = mixedRecords(400);
  const first = new PcrReplay(SHA1_SHA256[0]);
  for (const r of records.slice(0, 150)) first.extend(r);
  const state = first.toState();
  const start = Object.fromEntries(state.banks.map((b) => [b.bank, Object.fromEntries(b.pcrs.map((p) => [p.pcr, p.value]))]));
  const plan: PcrReplayOptions[] = [{ ...SHA1_SHA256[0], start, recordCount: state.recordCount }];
  const whole = referenceOutcome(binaryList(records), SHA1_SHA256);
  await assertSameEverywhere(fileOf(binaryList(records.slice(150))), plan, whole);
});

/** A list of `records` with `damage` applied to record `index` (given its bytes and offset). */
function damaged(records: readonly ImaRecord[], index: number, damage: (record: Uint8Array) => Uint8Array): { bytes: Uint8Array; offset: number } {
  const encoded = records.map((r) => encodeBinaryRecord(r));
  const offset = encoded.slice(0, index).reduce((n, e) => n + e.length, 0);
  const target = encoded[index];
  assert.ok(target !== undefined);
  encoded[index] = damage(Uint8Array.from(target));
  return { bytes: concatBytes(encoded), offset };
}

test('damaged lists: the same error (code, message, record index, byte offset) in one thread and in workers', async () => {
  const records = mixedRecords(500);
  // A record whose digest covers its data as listed: not a violation, not the `ima` template.
  const hashed = records.findIndex((r, i) => i >= 333 && r.template !== 'ima' && r.digest.some((b) => b !== 0));
  const cases: [string, number, (rec: Uint8Array) => Uint8Array, string][] = [
    ['flipped template-data byte', hashed, (rec) => ((rec[rec.length - 2] = (rec[rec.length - 2] ?? 0) ^ 1), rec), 'IMA_DIGEST_MISMATCH'],
    ['template name length 0', 321, (rec) => (rec.fill(0, 24, 28), rec), 'IMA_BAD_LENGTH'],
    ['cut inside the record', 444, (rec) => rec.subarray(0, 30), 'IMA_TRUNCATED'],
  ];
  for (const [name, index, damage, code] of cases) {
    const { bytes, offset } = damaged(index === 444 ? records.slice(0, 445) : records, index, damage);
    const expected = referenceOutcome(bytes, ALL_BANKS);
    assert.ok('code' in expected, name);
    assert.equal(expected.code, code, name);
    assert.equal(expected.recordIndex, index, name);
    if (code !== 'IMA_DIGEST_MISMATCH') assert.equal(expected.byteOffset, offset, name);
    await assertSameEverywhere(fileOf(bytes), ALL_BANKS, expected);
  }
});

test('a digest mismatch seen only by the verifying worker wins over a later error of the others', async () => {
  const records = mixedRecords(400).map((r, i) => (i === 50 ? { ...r, digest: new Uint8Array(20).fill(1) } : r));
  const bytes = concatBytes([binaryList(records), new Uint8Array(10)]);
  const expected = referenceOutcome(bytes, SHA1_SHA256);
  assert.ok('code' in expected && expected.code === 'IMA_DIGEST_MISMATCH' && expected.recordIndex === 50);
  await assertSameEverywhere(fileOf(bytes), SHA1_SHA256, expected);
});

test('planShares balances hash calls per record and puts the verification with the sha1 bank', () => {
  assert.deepEqual(planShares(SHA1_SHA256, 2), [
    [{ replay: 0, options: { banks: { sha1: 'native' }, verifyDigests: true } }],
    [{ replay: 0, options: { banks: { sha256: 'native' }, verifyDigests: false } }],
  ]);
  const four = planShares(ALL_BANKS, 2);
  const cost = (share: readonly { options: PcrReplayOptions }[]): number =>
    share.reduce((n, s) => n + Object.entries(s.options.banks ?? {}).reduce((m, [bank, mode]) => m + (bank === 'sha1' || mode === 'padded' ? 1 : 2), 0) + (s.options.verifyDigests === true ? 1 : 0), 0);
  assert.deepEqual(four.map(cost), [6, 5]);
  assert.equal(four.flat().filter((s) => s.options.verifyDigests === true).length, 1);
  assert.deepEqual(planShares(SHA1_SHA256, 8).length, 2, 'no more workers than units');
  assert.deepEqual(planShares(SHA1_SHA256, 1), [[{ replay: 0, options: { banks: { sha1: 'native', sha256: 'native' }, verifyDigests: true } }]]);
  assert.deepEqual(planShares([{}], 4).map((share) => share.map((s) => Object.keys(s.options.banks ?? {}))), [[['sha1']], [['sha256']], [['sha384']], [['sha512']]], 'default: every bank');
  assert.throws(() => planShares([{ banks: {} }], 2), (e: unknown) => e instanceof ImaError && e.code === 'IMA_BAD_STATE');
});

test('pushEach visits the records push returns, for every split of every capture; a bad length ends the list after the records before it', () => {
  for (const c of captures) {
    const whole = recordsAsHex(parseBinaryList(c.binary));
    for (const step of [1, 7, 100, 4096]) {
      const parser = new BinaryListParser();
      const seen: string[] = [];
      for (let at = 0; at < c.binary.length; at += step) {
        parser.pushEach(c.binary.subarray(at, at + step), (rec) => seen.push(...recordsAsHex([rec])));
      }
      parser.end();
      assert.deepEqual(seen, whole, `${c.name}, ${step}-byte chunks`);
    }
  }
  const records = mixedRecords(20);
  const { bytes } = damaged(records, 12, (rec) => (rec.fill(0xff, 24, 28), rec));
  const parser = new BinaryListParser();
  let visited = 0;
  assert.throws(() => parser.pushEach(bytes, () => visited++), (e: unknown) => e instanceof ImaError && e.code === 'IMA_BAD_LENGTH' && e.recordIndex === 12);
  assert.equal(visited, 12);
  assert.throws(() => parser.pushEach(new Uint8Array(0), () => visited++), (e: unknown) => e instanceof ImaError && e.code === 'IMA_BAD_LENGTH');
  assert.throws(() => parser.end(), (e: unknown) => e instanceof ImaError && e.code === 'IMA_BAD_LENGTH');
});

test('pushSpans hands out each record where it lies, for every split of every capture: in the chunk, or in the parser\'s buffer for a record completed from earlier chunks', () => {
  for (const c of captures) {
    for (const step of [1, 7, 100, 4096]) {
      const parser = new BinaryListParser();
      const spans: string[] = [];
      let inPlace = 0;
      let offset = 0;
      for (let at = 0; at < c.binary.length; at += step) {
        const chunk = c.binary.subarray(at, at + step);
        parser.pushSpans(chunk, (buf, from, next) => {
          spans.push(toHex(buf.subarray(from, next)));
          // A span in the chunk is where the record lies in the list.
          if (buf === chunk) {
            inPlace++;
            assert.equal(at + from, offset, `${c.name}, ${step}-byte chunks: in-place span at its list offset`);
          }
          offset += next - from;
        });
      }
      parser.end();
      const whole = parseBinaryList(c.binary).map((rec) => toHex(encodeBinaryRecord(rec)));
      assert.deepEqual(spans, whole, `${c.name}, ${step}-byte chunks: each span is the record's list bytes`);
      if (step === 4096 && c.binary.length > 8192) assert.ok(inPlace > whole.length / 2, `${c.name}: most records read in place`);
    }
  }
  const { bytes } = damaged(mixedRecords(20), 12, (rec) => (rec.fill(0xff, 24, 28), rec));
  let visited = 0;
  assert.throws(() => new BinaryListParser().pushSpans(bytes, () => visited++), (e: unknown) => e instanceof ImaError && e.code === 'IMA_BAD_LENGTH' && e.recordIndex === 12);
  assert.equal(visited, 12);
});

test('a 2 MiB record split over many chunks, between ordinary ones: pushEach and replayFile read it whole', async () => {
  const big = makeRecord('ima-buf', [digestNgField('sha256', new Uint8Array(32).fill(9)), nameNgField('big'), new Uint8Array(2 * 1024 * 1024).fill(0x5a)]);
  const records = [...mixedRecords(30), big, ...mixedRecords(30)];
  const bytes = binaryList(records);
  const whole = recordsAsHex(parseBinaryList(bytes));
  for (const step of [1000, 65536, 3 * 1024 * 1024]) {
    const parser = new BinaryListParser();
    const seen: string[] = [];
    for (let at = 0; at < bytes.length; at += step) parser.pushEach(bytes.subarray(at, at + step), (rec) => seen.push(...recordsAsHex([rec])));
    parser.end();
    assert.equal(parser.bufferedBytes, 0);
    assert.deepEqual(seen, whole, `${step}-byte chunks`);
  }
  await assertSameEverywhere(fileOf(bytes), SHA1_SHA256, referenceOutcome(bytes, SHA1_SHA256));
});

test('push copies each record out of the chunk, also from a Buffer chunk (whose slice() is a view)', () => {
  const c = captures[0];
  assert.ok(c !== undefined);
  const chunk = Buffer.from(c.binary);
  const records = new BinaryListParser().push(chunk);
  const before = recordsAsHex(records);
  chunk.fill(0xee);
  assert.deepEqual(recordsAsHex(records), before);
  assert.deepEqual(before, recordsAsHex(parseBinaryList(c.binary)));
});

test('readFileChunks reads the whole file through one reused buffer', async () => {
  const bytes = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 31) & 0xff);
  const handle = await open(fileOf(bytes), 'r');
  try {
    const parts: Uint8Array[] = [];
    const buffers = new Set<ArrayBufferLike>();
    for await (const chunk of readFileChunks(handle, 4096)) {
      parts.push(Uint8Array.from(chunk));
      buffers.add(chunk.buffer);
    }
    assert.deepEqual(parts.map((p) => p.length), [4096, 4096, 1808]);
    assert.deepEqual(concatBytes(parts), bytes);
    assert.equal(buffers.size, 1);
  } finally {
    await handle.close();
  }
});

test('an ASCII capture line with its bytes is what the worker path parses (formatAsciiLineBytes round trip)', async () => {
  const records = mixedRecords(120).filter((r) => r.template !== 'ima');
  const ascii = concatBytes(records.map((r, i) => formatAsciiLineBytes(r, {}, i)));
  await assertSameEverywhere(fileOf(ascii), SHA1_SHA256, referenceOutcome(binaryList(records), SHA1_SHA256), { format: 'ascii' });
});
