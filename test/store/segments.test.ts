/**
 * Chunk values in segment files (docs/store.md#segment-files): a store written by the previous
 * format (schema 1, every value in LevelDB: test/fixtures/store-schema1) opens and serves
 * byte-exact, a torn tail past the last reference is cut on open, values are read once each in runs
 * of consecutive bytes, segment bytes that do not match their reference are STORE_CORRUPT, a failed
 * segment write changes nothing, retention deletes a boot's segment and an orphan is removed on open.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFile, cp, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Level } from 'level';
import { encodeBinaryRecord, formatAsciiLineBytes, concatBytes } from '../../src/ima/index.js';
import { openLog } from '../../src/serve/index.js';
import { chunkKey, openStore, type ChunkSegments, type ImaStore, type SegmentReader, type StoreError } from '../../src/store/index.js';
import { decodeChunkEntry, SEGMENTS_DIRECTORY, SegmentFiles, STORE_SCHEMA_VERSION } from '../../src/testing/index.js';
import { bootInfo, makeRecord } from './_fixtures.js';
import { assertSegmentMutantsFail, references, segmentPath } from './_tamper.js';
import { fill } from './suite.js';

const FIXTURE = new URL('../../../test/fixtures/store-schema1/', import.meta.url).pathname;

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'imakeep-segments-'));
  after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Every record of the boot read back, checked against `makeRecord`; returns how many. */
async function checkRecords(store: ImaStore, boot: number, first = 0): Promise<number> {
  let n = first;
  for await (const { index, record } of store.records(boot, first)) {
    assert.equal(index, n);
    assert.deepEqual(Uint8Array.from(record.data), makeRecord(n).data);
    n++;
  }
  return n - first;
}

/** Closes `store`, opens the store in `dir` again and checks that `boot` holds records 0..count-1. */
async function reopenChecked(store: ImaStore, dir: string, boot: number, count: number): Promise<ImaStore> {
  await store.close();
  const again = await openStore(dir);
  assert.equal(await checkRecords(again, boot), count);
  return again;
}

async function rejectsCorrupt(p: Promise<unknown>, key: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: StoreError) => {
    assert.equal(e.code, 'STORE_CORRUPT');
    assert.equal(e.details.key, key);
    assert.match(e.message, message);
    return true;
  });
}

async function drain(store: ImaStore, boot: number): Promise<void> {
  for await (const r of store.records(boot)) void r;
}

/** The raw LevelDB value at `key` of the (closed) store in `dir`. */
async function rawValue(dir: string, key: Uint8Array): Promise<Uint8Array> {
  const db = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
  try {
    return (await db.get(key)) ?? assert.fail('no value');
  } finally {
    await db.close();
  }
}

/** `files` as the store's segments, some operations replaced (a test's fault or counter). */
function segmentsWith(files: SegmentFiles, replaced: Partial<ChunkSegments>): ChunkSegments {
  return {
    append: (boot, value) => files.append(boot, value),
    reader: (boot) => files.reader(boot),
    truncate: (boot, length) => files.truncate(boot, length),
    remove: (boot) => files.remove(boot),
    boots: () => files.boots(),
    close: () => files.close(),
    ...replaced,
  };
}

/** The segment files of `dir`, each reader counting the values every read asks for. */
async function countingSegments(dir: string): Promise<{ segments: ChunkSegments; reads: number[][] }> {
  const files = await SegmentFiles.open(join(dir, SEGMENTS_DIRECTORY), dir);
  const reads: number[][] = [];
  const reader = async (boot: number): Promise<SegmentReader | undefined> => {
    const inner = await files.reader(boot);
    if (inner === undefined) return undefined;
    return {
      read: (offset, lengths) => {
        reads.push([offset, ...lengths]);
        return inner.read(offset, lengths);
      },
      close: () => inner.close(),
    };
  };
  return { segments: segmentsWith(files, { reader }), reads };
}

describe('store segment files', () => {
  it('opens a store written by schema 1 and serves it byte-exact, then chains new chunks in a segment onto it', async () => {
    const dir = await tempDir();
    await cp(FIXTURE, dir, { recursive: true });
    // Written by imakeep 3956c16 (test/fixtures/store-schema1/README.md); hashes read with it.
    const chunks = [
      ['chunk/0/0', '5e95969ec9af9263d84359c3fe1d56c40f7c847c3e765fdf52c1b1cc68d822d4'],
      ['chunk/0/10', 'e24268bbe6205eddf4f46fbb9dd58e4664aaa4b9c339d7078161eb1b64d859ea'],
      ['chunk/0/20', '7307a06213f491776a0e61e96511068c3d16a0a465f7d747e81c748808ccd807'],
      ['chunk/1/0', '2c22d0903928048562f1a50ce094384b7307f480ef9af0e5c94fcc9f9a462c1e'],
      ['chunk/1/4', '03df599a17c1f9517b7dc7eca4f63719a82ed1f3406f0a3e2f077cd393c104cb'],
    ];
    const served: Record<string, string> = {
      '0 binary sha1': '33c4f111c5161f51848518364699660ef775292f04bde610f75cc6e0efdf0b19',
      '0 binary sha256': '43a774fb5c039b30a8e0ab398faebf399d4b1e0b56381124ecdc9ad51f0fef5f',
      '0 ascii sha1': 'ea76f646c1a6dcf50e2c7d570807b27f685e9d8623cd47b79a30be55943b15f5',
      '0 ascii sha256': '3fc4a452c9217216b9b1217101a81d9b0cbee7ed9a7f5f2325f633d5735054ae',
      '1 binary sha1': '6b9822d6f7b5534b0944fb418e9061fa7cd20ade6d32fe7593e58879cc8ee805',
      '1 binary sha256': '5c1358400d9a919284b69edef6782ea5c63771910471a33fff76d36ff250d1f8',
      '1 ascii sha1': '476385a67a73e5233ce6d440ccd017c243a8ae21ca9aaf28b2d986e67862267e',
      '1 ascii sha256': '10073cf2e6037575af1b515e0285d81796838e329ed5a204e332528d964022ea',
    };
    let store = await openStore(dir);
    try {
      assert.equal(store.meta.schema, STORE_SCHEMA_VERSION, 'meta is marked before any reference is written');
      const read: string[][] = [];
      for (const boot of [0, 1]) for await (const c of store.chunks(boot)) read.push([c.key, sha256(c.value)]);
      assert.deepEqual(read, chunks);
      for (const [what, hash] of Object.entries(served)) {
        const [boot, format, bank] = what.split(' ') as [string, 'binary' | 'ascii', 'sha1' | 'sha256'];
        const log = await openLog({ store }, { boot: Number(boot), format, bank });
        const h = createHash('sha256');
        for await (const bytes of log.bytes()) h.update(bytes);
        assert.equal(h.digest('hex'), hash, what);
      }
      assert.equal(store.currentBoot, 1);
      assert.equal(await store.storedCount(1), 7);
      await fill(store, 1, 7, 30, 10);
      await store.close();
      const reference = decodeChunkEntry(await rawValue(dir, chunkKey(1, 7)), 'chunk/1/7');
      assert.ok('reference' in reference, 'the new chunk is in the segment file');
      assert.equal(reference.reference.offset, 0);
      store = await openStore(dir);
      // chunks() checks every link: chunk/1/7 (in the segment) chains onto chunk/1/4 (in LevelDB).
      assert.equal(await checkRecords(store, 1), 30);
      assert.equal(await checkRecords(store, 0), 25);
    } finally {
      await store.close();
    }
  });

  it('cuts a torn tail past the last reference on open, and appends after it', async () => {
    const dir = await tempDir();
    let store = await openStore(dir);
    try {
      const boot = await store.beginBoot(bootInfo(0));
      await fill(store, boot, 0, 30, 10);
      await store.close();
      const referenced = (await stat(segmentPath(dir, boot))).size;
      // A value appended whose reference never reached LevelDB (a crash between the two).
      await appendFile(segmentPath(dir, boot), new Uint8Array(5000).fill(0xee));
      store = await openStore(dir);
      assert.equal((await stat(segmentPath(dir, boot))).size, referenced);
      assert.equal(await store.storedCount(boot), 30);
      await fill(store, boot, 30, 45, 10);
      store = await reopenChecked(store, dir, boot, 45);
    } finally {
      await store.close();
    }
  });

  it('refuses segment bytes that do not match their reference with STORE_CORRUPT naming the key', async () => {
    const dir = await tempDir();
    let store = await openStore(dir);
    const boot = await store.beginBoot(bootInfo(0));
    await fill(store, boot, 0, 20, 10);
    await store.close();
    const original = await readFile(segmentPath(dir, boot));
    const flipped = Uint8Array.from(original);
    flipped[100] = (flipped[100] ?? 0) ^ 1;
    await writeFile(segmentPath(dir, boot), flipped);
    store = await openStore(dir);
    try {
      await rejectsCorrupt(drain(store, boot), 'chunk/0/0', /do not hash to the reference's hash/);
    } finally {
      await store.close();
    }
    // Cut inside the last chunk: the open cuts nothing (the file is shorter than referenced), the read refuses.
    await writeFile(segmentPath(dir, boot), original.subarray(0, original.length - 10));
    store = await openStore(dir);
    try {
      await rejectsCorrupt(store.lastChunk(boot), 'chunk/0/10', /which ends at/);
      await rm(segmentPath(dir, boot));
      await rejectsCorrupt(drain(store, boot), 'chunk/0/0', /which is missing/);
    } finally {
      await store.close();
    }
  });

  it('a failed segment write is STORE_WRITE_FAILED and changes nothing; the retry stores the chunk once', async () => {
    const dir = await tempDir();
    const files = await SegmentFiles.open(join(dir, SEGMENTS_DIRECTORY), dir);
    let failNext = false;
    const segments = segmentsWith(files, {
      append: async (boot, value) => {
        if (!failNext) return files.append(boot, value);
        failNext = false;
        // Half the value reached the file, then the device filled up.
        await files.append(boot, value.subarray(0, value.length >> 1));
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      },
    });
    let store = await openStore(dir, { segments });
    try {
      const boot = await store.beginBoot(bootInfo(0));
      await fill(store, boot, 0, 10, 10);
      failNext = true;
      await assert.rejects(fill(store, boot, 10, 20, 10), { code: 'STORE_WRITE_FAILED' });
      assert.equal(await store.storedCount(boot), 10);
      await fill(store, boot, 10, 20, 10);
      store = await reopenChecked(store, dir, boot, 20);
    } finally {
      await store.close();
    }
  });

  it('reads consecutive values in runs (one value first, then doubling), each value once and byte-exact, a gap splitting a run', async () => {
    const dir = await tempDir();
    const files = await SegmentFiles.open(join(dir, SEGMENTS_DIRECTORY), dir);
    let gapAfter = -1;
    const segments = segmentsWith(files, {
      append: async (boot, value) => {
        if (gapAfter-- === 0) await files.append(boot, new Uint8Array(333).fill(0xee)); // a failed write's leftovers
        return files.append(boot, value);
      },
    });
    let store = await openStore(dir, { segments });
    const boot = await store.beginBoot(bootInfo(0));
    await fill(store, boot, 0, 300, 4);
    gapAfter = 0;
    await fill(store, boot, 300, 600, 4);
    await store.close();
    const refs = await references(dir, boot);
    assert.equal(refs.length, 150);
    const segment = await readFile(segmentPath(dir, boot));
    const counted = await countingSegments(dir);
    store = await openStore(dir, { segments: counted.segments });
    try {
      const read: string[] = [];
      for await (const c of store.chunks(boot)) read.push(`${c.key} ${sha256(c.value)}`);
      assert.deepEqual(
        read,
        refs.map(({ key, reference: r }) => `${key} ${sha256(segment.subarray(r.offset, r.offset + r.length))}`),
      );
      // Runs: one value, then up to twice the bytes of the last; the gap (333 bytes before chunk/0/300) starts a new run.
      const lengths = refs.map((r) => r.reference.length);
      assert.deepEqual(counted.reads[0], [refs[0]?.reference.offset, lengths[0]]);
      assert.deepEqual(counted.reads.flatMap(([, ...l]) => l), lengths, 'every value read once, in order');
      let at = 0;
      for (const [offset, ...l] of counted.reads) {
        const run = refs.slice(at, at + l.length);
        assert.equal(offset, run[0]?.reference.offset);
        for (let i = 1; i < run.length; i++) assert.equal(run[i]?.reference.offset, (run[i - 1]?.reference.offset ?? 0) + (run[i - 1]?.reference.length ?? 0), 'a run is consecutive bytes');
        at += l.length;
      }
      const gap = refs.findIndex((r) => r.key === 'chunk/0/300');
      assert.ok(counted.reads.some(([offset]) => offset === refs[gap]?.reference.offset), 'the value after the gap starts a run');
      assert.ok(counted.reads.length < 12, `${counted.reads.length} reads for 150 values`);
      // The lists served from these runs are the records' own encodings, from 0 and from inside a run.
      for (const from of [0, 301]) {
        const records = Array.from({ length: 600 - from }, (_, i) => makeRecord(from + i));
        for (const [format, encode] of [
          ['binary', (r: (typeof records)[number]) => encodeBinaryRecord(r)],
          ['ascii', (r: (typeof records)[number]) => formatAsciiLineBytes(r)],
        ] as const) {
          const parts: Uint8Array[] = [];
          for await (const bytes of (await openLog({ store }, { boot, from, format })).bytes()) parts.push(bytes);
          assert.equal(sha256(concatBytes(parts)), sha256(concatBytes(records.map(encode))), `${format} from ${from}`);
        }
      }
      // A single chunk (the last) is one value read.
      counted.reads.length = 0;
      assert.equal((await store.lastChunk(boot))?.key, 'chunk/0/596');
      assert.deepEqual(counted.reads, [[refs[149]?.reference.offset, lengths[149]]]);
    } finally {
      await store.close();
    }
  });

  it('bytes of a segment, flipped (the first, a middle and the last of each value), fail the walk with STORE_CORRUPT naming the chunk holding them', async () => {
    await assertSegmentMutantsFail(await tempDir(), 'sample');
  });

  it('dropBoot deletes the boot segment; a segment whose boot is gone is removed on open', async () => {
    const dir = await tempDir();
    let clock = bootInfo(0).firstSeen;
    let store = await openStore(dir, { now: () => clock });
    try {
      const old = await store.beginBoot(bootInfo(0));
      await fill(store, old, 0, 20, 10);
      await store.markExported(old, 20);
      const current = await store.beginBoot(bootInfo(1));
      await fill(store, current, 0, 5, 10);
      clock += 10_000;
      await store.dropBoot(old, { exportedAck: true, olderThanMs: 1_000 });
      await assert.rejects(stat(segmentPath(dir, old)), { code: 'ENOENT' });
      await store.close();
      // An interrupted drop: the boot's keys are gone, its segment is not.
      await writeFile(segmentPath(dir, 7), new Uint8Array(100));
      store = await openStore(dir);
      await assert.rejects(stat(segmentPath(dir, 7)), { code: 'ENOENT' });
      assert.equal(await checkRecords(store, current), 5);
    } finally {
      await store.close();
    }
  });
});
