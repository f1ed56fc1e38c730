/** The on-disk bytes, pinned: any change of the CBOR options or a value's field order fails here. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { describe, it } from 'node:test';
import { ChunkBuilder, StoreError, chunkKey, chunkRecords, decodeBootRecord, decodeCheckpoint, decodeChunk, encodeBootRecord, encodeCheckpoint, formatKey, type Journal } from '../../src/store/index.js';
import { encodeBinaryList } from '../../src/ima/index.js';
import { bootInfo, checkpoint, makeRecord, replayState } from './_fixtures.js';
import { plain } from './suite.js';
import {
  bootKey,
  checkpointKey,
  chunkRange,
  decodeChunkEntry,
  decodeJournal,
  decodeMeta,
  decodeValue,
  encodeChunk,
  encodeChunkReference,
  encodeJournal,
  encodeMeta,
  encodeValue,
  journalKey,
} from '../../src/testing/index.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * Golden vectors: generated once from the values below and read against RFC 8949 (e.g. the chunk:
 * `a5` map of 5, `6a` "firstIndex", `1b 0000000100000000` = 2^32 as uint64, ...).
 */
const GOLDEN = {
  chunk:
      'a56a6669727374496e6465781b000000010000000065636f756e74026870726576486173685820ababababababababab' +
      'ababababababababababababababababababababababab677265636f72647358d50a00000000070e151c232a31383f46' +
      '4d545b626970777e8506000000696d612d6e6754000000280000007368613235363a0000070e151c232a31383f464d54' +
      '5b626970777e858c939aa1a8afb6bdc4cbd2d9240000002f7573722f6c69622f7838365f36342d6c696e75782d676e75' +
      '2f66696c652d302e736f000a000000a0a7aeb5bcc3cad1d8dfe6edf4fb020910171e2503000000696d61bfc6cdd4dbe2' +
      'e9f0f7fe050c131a21282f363d44240000002f7573722f6c69622f7838365f36342d6c696e75782d676e752f66696c65' +
      '2d39362e736f667265706c6179a26b7265636f7264436f756e74026562616e6b7382a36462616e6b6473686131646d6f' +
      '6465666e6174697665647063727381a2637063720a6576616c7565543e454c535a61686f767d848b9299a0a7aeb5bcc3' +
      'a36462616e6b66736861323536646d6f6465666e6174697665647063727381a2637063720a6576616c756558203e454c' +
      '535a61686f767d848b9299a0a7aeb5bcc3cad1d8dfe6edf4fb02091017',
  checkpoint:
      'a765636f756e7407647063727381a36462616e6b66736861323536637063720a6576616c756541066661747465737442' +
      '0102697369676e6174757265410366616b4e616d654104656e6f6e6365410567706372426c6f624107',
  /** A checkpoint quoted with the version-2 nonce: the same map plus `66` "anchor" `1b 0000000100000000`. */
  checkpointV2:
      'a865636f756e7407647063727381a36462616e6b66736861323536637063720a6576616c756541066661747465737442' +
      '0102697369676e6174757265410366616b4e616d654104656e6f6e6365410567706372426c6f62410766616e63686f72' +
      '1b0000000100000000',
  journal:
      'a36772656d6f76656418646770656e64696e67a466666c61766f72667374616765646772656d6f7665641864616e1462' +
      '61741b0000019aaaac260066737461676564a264737465706673746f72656465636f756e7414',
  boot:
      'a86c6b65726e656c426f6f744964782430663661316337652d336232642d346335352d396531612d3030303030303030' +
      '303030316966697273745365656e1b0000019aaaac26016a7265736574436f756e74016962616e6b4d6f646573a26473' +
      '686131666e617469766566736861323536666e61746976656a656e6469616e6e657373626c656874656d706c61746566' +
      '696d612d6e676c74656d706c6174654861736866736861323536686578706f72746564a266637572736f720362617405',
  meta:
      'a366736368656d610168616b5075626c696341aa6864657669636549646567772d3137',
};

function chunkValue() {
  const builder = new ChunkBuilder(0);
  builder.add(makeRecord(0), 0);
  builder.add(makeRecord(96), 0); // an `ima` template record: no data length field
  return { ...builder.draft(replayState(2)), firstIndex: 4294967296, prevHash: new Uint8Array(32).fill(0xab) };
}
const CHECKPOINT = {
  ...checkpoint(7),
  attest: Uint8Array.of(1, 2),
  signature: Uint8Array.of(3),
  akName: Uint8Array.of(4),
  nonce: Uint8Array.of(5),
  pcrs: [{ bank: 'sha256', pcr: 10, value: Uint8Array.of(6) }],
  pcrBlob: Uint8Array.of(7),
} as const;
const JOURNAL: Journal = {
  removed: 100,
  pending: { flavor: 'staged', removed: 100, n: 20, at: 1763800000000 },
  staged: { step: 'stored', count: 20 },
};
/** An `n` intent with the head facts recovery decides from (added after the format landed). */
const JOURNAL_N_FACTS: Journal = {
  removed: 7,
  pending: { flavor: 'n', removed: 7, n: 3, at: 9, kernelHead: { listed: 12, first: new Uint8Array(32).fill(1), next: null } },
  staged: null,
};
/** An `n` intent as the store wrote it before the head facts existed (the landed format). */
const GOLDEN_JOURNAL_N_LANDED = 'a36772656d6f766564076770656e64696e67a466666c61766f72616e6772656d6f76656407616e036261740966737461676564f6';
/** The same intent with its head facts: one more key, `kernelHead`, last in the intent. */
const GOLDEN_JOURNAL_N_FACTS =
  'a36772656d6f766564076770656e64696e67a566666c61766f72616e6772656d6f76656407616e03626174096a6b6572' +
  '6e656c48656164a3666c69737465640c6566697273745820010101010101010101010101010101010101010101010101' +
  '0101010101010101646e657874f666737461676564f6';
const BOOT = { ...bootInfo(1), exported: { cursor: 3, at: 5 } };
const META = { schema: 1, akPublic: Uint8Array.of(0xaa), deviceId: 'gw-17' };

describe('store CBOR golden vectors', () => {
  it('chunk: integers past 2^32 as CBOR uint64 (1b…), records as one byte string', () => {
    const bytes = encodeChunk(chunkValue());
    assert.equal(hex(bytes), GOLDEN.chunk);
    assert.ok(GOLDEN.chunk.startsWith('a56a6669727374496e6465781b0000000100000000'));
    assert.deepEqual(plain(decodeChunk(bytes, 'k')), plain(chunkValue()));
  });
  it('chunk reference (schema 2): `a5`, "segmentOffset" first, offsets and indexes past 2^32 as uint64', () => {
    const reference = { offset: 2 ** 33 + 5, length: 65_600, firstIndex: 2 ** 32, count: 400, hash: new Uint8Array(32).fill(0xcd) };
    const bytes = encodeChunkReference(reference);
    // a5 map(5) · 6d "segmentOffset" 1b 0000000200000005 · 66 "length" 1a 00010040 · 6a "firstIndex"
    // 1b 0000000100000000 · 65 "count" 19 0190 · 64 "hash" 5820 + 32 bytes (RFC 8949 §3.1).
    assert.equal(
      hex(bytes),
      'a56d7365676d656e744f66667365741b0000000200000005666c656e6774681a000100406a6669727374496e6465781b000000010000000065636f756e7419019064686173685820' +
        'cd'.repeat(32),
    );
    assert.deepEqual(plain(decodeChunkEntry(bytes, 'k')), plain({ reference }));
    const chunk = encodeChunk(chunkValue());
    assert.deepEqual(plain(decodeChunkEntry(chunk, 'k')), plain({ value: chunk, chunk: chunkValue() }));
  });

  it('checkpoint: version 1 (no anchor) keeps its bytes; version 2 adds the anchor last', () => {
    assert.equal(hex(encodeCheckpoint(CHECKPOINT)), GOLDEN.checkpoint);
    const v1 = decodeCheckpoint(encodeCheckpoint(CHECKPOINT), 'k');
    assert.deepEqual(plain(v1), plain(CHECKPOINT));
    assert.equal('anchor' in v1, false);
    const v2 = { ...CHECKPOINT, anchor: 2 ** 32 };
    assert.equal(hex(encodeCheckpoint(v2)), GOLDEN.checkpointV2);
    assert.deepEqual(plain(decodeCheckpoint(encodeCheckpoint(v2), 'k')), plain(v2));
  });
  it('journal', () => {
    assert.equal(hex(encodeJournal(JOURNAL)), GOLDEN.journal);
    assert.deepEqual(decodeJournal(encodeJournal(JOURNAL), 'k'), JOURNAL);
  });
  it('journal: an intent of the landed format (no head facts) still decodes, and encodes to the same bytes', () => {
    const landed: Journal = { removed: 7, pending: { flavor: 'n', removed: 7, n: 3, at: 9 }, staged: null };
    const decoded = decodeJournal(Buffer.from(GOLDEN_JOURNAL_N_LANDED, 'hex'), 'journal/0');
    assert.deepEqual(decoded, landed);
    assert.equal(decoded.pending !== null && 'kernelHead' in decoded.pending, false, 'no kernelHead key at all');
    assert.equal(hex(encodeJournal(landed)), GOLDEN_JOURNAL_N_LANDED);
  });
  it('journal: an intent with the kernel head facts round-trips (next null and 32 bytes)', () => {
    assert.equal(hex(encodeJournal(JOURNAL_N_FACTS)), GOLDEN_JOURNAL_N_FACTS);
    assert.deepEqual(plain(decodeJournal(encodeJournal(JOURNAL_N_FACTS), 'k')), plain(JOURNAL_N_FACTS));
    const withNext: Journal = { ...JOURNAL_N_FACTS, pending: { flavor: 'n', removed: 7, n: 3, at: 9, kernelHead: { listed: 12, first: new Uint8Array(32).fill(1), next: new Uint8Array(32).fill(2) } } };
    assert.deepEqual(plain(decodeJournal(encodeJournal(withNext), 'k')), plain(withNext));
    const short = encodeValue({ removed: 7, pending: { flavor: 'n', removed: 7, n: 3, at: 9, kernelHead: { listed: 12, first: Uint8Array.of(1), next: null } }, staged: null });
    assert.throws(() => decodeJournal(short, 'journal/0'), { code: 'STORE_CORRUPT', message: 'journal/0 .pending .kernelHead .first is not a byte string of 32 bytes' });
  });
  it('boot metadata, bank modes in BANKS order whatever the input order', () => {
    assert.equal(hex(encodeBootRecord(BOOT)), GOLDEN.boot);
    assert.deepEqual(plain(decodeBootRecord(encodeBootRecord(BOOT), 'k')), plain({ ...BOOT, bankModes: { sha1: 'native', sha256: 'native' } }));
  });
  it('meta', () => {
    assert.equal(hex(encodeMeta(META)), GOLDEN.meta);
    assert.deepEqual(plain(decodeMeta(encodeMeta(META), 'meta')), plain(META));
  });
  it('Buffer and Uint8Array encode alike (no tag 64), re-encoding what was read gives the same bytes', () => {
    assert.equal(hex(encodeValue(Uint8Array.of(1, 2))), '420102');
    assert.equal(hex(encodeValue(Buffer.from([1, 2]))), '420102');
    const bytes = encodeChunk(chunkValue());
    assert.equal(hex(encodeChunk(decodeChunk(bytes, 'k'))), hex(bytes));
  });
});

describe('store CBOR decoding errors', () => {
  const corrupt = (bytes: Uint8Array, key = 'chunk/0/0'): StoreError => {
    try {
      decodeValue(bytes, key);
    } catch (e) {
      assert.ok(e instanceof StoreError);
      assert.equal(e.code, 'STORE_CORRUPT');
      assert.equal(e.details.key, key);
      return e;
    }
    return assert.fail('decoded');
  };
  it('truncated, trailing bytes, huge array header, oversized', () => {
    const good = encodeJournal(JOURNAL);
    corrupt(good.subarray(0, good.length - 1));
    corrupt(Uint8Array.of(...good, 0));
    corrupt(Uint8Array.of(0x9b, 0, 0, 0, 1, 0, 0, 0, 0)); // array of 2^32 items in 9 bytes
    assert.match(corrupt(new Uint8Array(16 * 1024 * 1024 + 1)).message, /exceeds/);
  });
  it('a value of the wrong shape names key and field', () => {
    const e = (() => {
      try {
        decodeJournal(encodeValue({ removed: -1, pending: null, staged: null }), 'journal/3');
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    assert.ok(e instanceof StoreError);
    assert.equal(e.code, 'STORE_CORRUPT');
    assert.equal(e.message, 'journal/3 .removed is not a non-negative integer');
    assert.equal(e.details.key, 'journal/3');
  });
});

describe('store keys', () => {
  it('sort numerically, print readably', () => {
    const keys = [chunkKey(1, 0), chunkKey(0, 2 ** 40), chunkKey(0, 256), chunkKey(0, 255), chunkKey(0, 0)];
    const sorted = [...keys].sort(Buffer.compare).map(formatKey);
    assert.deepEqual(sorted, ['chunk/0/0', 'chunk/0/255', 'chunk/0/256', 'chunk/0/1099511627776', 'chunk/1/0']);
    assert.deepEqual([formatKey(bootKey(7)), formatKey(journalKey(7)), formatKey(checkpointKey(7, 9))], ['boot/7', 'journal/7', 'ckpt/7/9']);
    assert.equal(hex(chunkKey(1, 2)), '6368756e6b2f000000012f0000000000000002');
  });
  it('a boot range holds exactly its chunks', () => {
    const r = chunkRange(1);
    const inside = (k: Uint8Array): boolean => Buffer.compare(k, r.gte) >= 0 && Buffer.compare(k, r.lt) < 0;
    assert.deepEqual([chunkKey(0, 2 ** 50), chunkKey(1, 0), chunkKey(1, 2 ** 53 - 1), chunkKey(2, 0)].map(inside), [false, true, true, false]);
    assert.throws(() => chunkKey(-1, 0), RangeError);
    assert.throws(() => chunkKey(0, 1.5), RangeError);
  });
});

describe('ChunkBuilder', () => {
  it('seals at the byte bound or the age bound, keeps records added during a commit', () => {
    const b = new ChunkBuilder(10, { maxBytes: 1000, maxAgeMs: 5000 });
    assert.equal(b.shouldSeal(1e9), false); // empty: never
    b.add(makeRecord(10), 100);
    assert.equal(b.shouldSeal(5099), false);
    assert.equal(b.shouldSeal(5100), true);
    while (b.byteLength < 1000) b.add(makeRecord(b.nextIndex), 200);
    assert.equal(b.shouldSeal(201), true);
    const draft = b.draft(replayState(b.nextIndex));
    assert.equal(draft.records.length, b.byteLength);
    b.add(makeRecord(b.nextIndex), 300); // arrives while the commit is in flight
    b.committed(draft);
    assert.deepEqual([b.firstIndex, b.count], [10 + draft.count, 1]);
    assert.throws(() => b.committed(draft), RangeError);
  });

  it('addRecords takes list bytes as they are: the same body as add() of each record', () => {
    const recs = [0, 1, 2, 3].map((i) => makeRecord(20 + i));
    const one = new ChunkBuilder(20);
    for (const r of recs) one.add(r, 7);
    const runs = new ChunkBuilder(20);
    runs.addRecords(encodeBinaryList(recs.slice(0, 3)), 3, 7);
    runs.addRecords(new Uint8Array(0), 0, 8); // nothing: the age clock stays
    runs.addRecords(encodeBinaryList(recs.slice(3)), 1, 9);
    assert.deepEqual([runs.count, runs.byteLength, runs.nextIndex], [4, one.byteLength, 24]);
    assert.deepEqual(runs.draft(replayState(24)).records, one.draft(replayState(24)).records);
    assert.equal(runs.shouldSeal(7 + 60_000), true, 'the age clock started at the first run (7)');
    assert.equal(runs.shouldSeal(7 + 59_999), false);
  });

  it('sealsAfter says where the chunks of a run end before it is added', () => {
    const b = new ChunkBuilder(0, { maxBytes: 1000, maxAgeMs: 5000 });
    assert.equal(b.sealsAfter(0, 0, 0), false, 'no bytes: nothing to seal');
    assert.equal(b.sealsAfter(999, 0, 100), false);
    assert.equal(b.sealsAfter(1000, 0, 100), true, 'an empty chunk: the run alone reaches the byte bound');
    b.addRecords(new Uint8Array(600), 3, 100);
    assert.equal(b.sealsAfter(399, 0, 100), false, '600 held + 399');
    assert.equal(b.sealsAfter(400, 0, 100), true, '600 held + 400');
    assert.equal(b.sealsAfter(10, 0, 5100), true, 'held since 100: the age bound at 5100');
    assert.equal(b.sealsAfter(1399, 400, 5100), false, 'sealed 400 bytes in: 999 since, a new chunk opened now');
    assert.equal(b.sealsAfter(1400, 400, 5100), true);
    assert.equal(b.sealsAfter(400, 400, 5100), false, 'nothing since the seal');
    const ageOnly = new ChunkBuilder(0, { maxBytes: 1000, maxAgeMs: 0 });
    assert.equal(ageOnly.sealsAfter(1, 0, 0), true, 'maxAgeMs 0: every record is a chunk');
    assert.equal(ageOnly.sealsAfter(2, 1, 0), true);
  });
});

describe('chunk round trip (property)', () => {
  const record = fc.record({
    pcr: fc.integer({ min: 0, max: 23 }),
    digest: fc.uint8Array({ minLength: 20, maxLength: 20 }),
    template: fc.constantFrom('ima-ng', 'ima-sig', 'ima-buf', 'd-ng|n-ng|evmsig'),
    data: fc.uint8Array({ minLength: 1, maxLength: 600 }),
  });
  it('records survive builder → encode → decode → parse, and re-encoding gives the same bytes', () => {
    fc.assert(
      fc.property(fc.array(record, { minLength: 1, maxLength: 40 }), fc.nat({ max: 2 ** 40 }), (records, first) => {
        const builder = new ChunkBuilder(first);
        for (const r of records) builder.add(r, 0);
        const draft = builder.draft(replayState(first + records.length));
        const bytes = encodeChunk({ ...draft, prevHash: null });
        const chunk = decodeChunk(bytes, 'chunk/0/0');
        assert.deepEqual(plain(chunkRecords(chunk, 'chunk/0/0')), plain(records));
        assert.equal(hex(encodeChunk(chunk)), hex(bytes));
      }),
      { numRuns: 200 },
    );
  });
});
