/**
 * Segment bytes changed on disk (docs/store.md#segment-files: a value that does not hash to its
 * reference's hash is STORE_CORRUPT naming the key): the default suite flips a sample of a
 * segment's bytes (test/store/segments.test.ts), test/slow/segment-tamper.test.ts every byte.
 */
import assert from 'node:assert/strict';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import { formatKey, openStore, type ChunkReference, type StoreError } from '../../src/store/index.js';
import { chunkRange, decodeChunkEntry, SEGMENTS_DIRECTORY } from '../../src/testing/index.js';
import { bootInfo } from './_fixtures.js';
import { fill } from './suite.js';

export function segmentPath(dir: string, boot: number): string {
  return join(dir, SEGMENTS_DIRECTORY, `${String(boot).padStart(10, '0')}.seg`);
}

/** Every chunk reference of `boot` in the (closed) store in `dir`, with its printable key, in key order. */
export async function references(dir: string, boot: number): Promise<{ key: string; reference: ChunkReference }[]> {
  const db = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
  const out: { key: string; reference: ChunkReference }[] = [];
  try {
    for await (const [key, value] of db.iterator(chunkRange(boot))) {
      const entry = decodeChunkEntry(value, formatKey(key));
      assert.ok('reference' in entry, `${formatKey(key)} is a reference`);
      out.push({ key: formatKey(key), reference: entry.reference });
    }
  } finally {
    await db.close();
  }
  return out;
}

/**
 * Fills a store in `dir` (16 records in chunks of 2, so one walk reads them in runs of 1, 2 and 4
 * values), then flips one bit of each chosen segment byte in turn (`all`, or the first, a middle
 * and the last byte of each value) and walks the boot's chunks: the walk must yield exactly the
 * chunks before the one holding the byte, then fail with STORE_CORRUPT naming that chunk.
 */
export async function assertSegmentMutantsFail(dir: string, which: 'all' | 'sample'): Promise<number> {
  let store = await openStore(dir);
  const boot = await store.beginBoot(bootInfo(0));
  await fill(store, boot, 0, 16, 2);
  await store.close();
  const refs = await references(dir, boot);
  const path = segmentPath(dir, boot);
  const size = (await stat(path)).size;
  const last = refs.at(-1)?.reference;
  assert.equal((last?.offset ?? 0) + (last?.length ?? 0), size, 'the segment holds the values and nothing else');
  const offsets =
    which === 'all'
      ? Array.from({ length: size }, (_, i) => i)
      : refs.flatMap(({ reference: r }) => [r.offset, r.offset + (r.length >> 1), r.offset + r.length - 1]);
  store = await openStore(dir);
  const file = await open(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    for (const offset of offsets) {
      await file.read(byte, 0, 1, offset);
      const original = byte[0] ?? 0;
      await file.write(Uint8Array.of(original ^ (1 << offset % 8)), 0, 1, offset);
      const holder = refs.findIndex((r) => offset >= r.reference.offset && offset < r.reference.offset + r.reference.length);
      const seen: string[] = [];
      await assert.rejects(
        (async () => {
          for await (const c of store.chunks(boot)) seen.push(c.key);
        })(),
        (e: StoreError) => e.code === 'STORE_CORRUPT' && e.details.key === refs[holder]?.key && /do not hash/.test(e.message),
        `byte ${offset}`,
      );
      assert.deepEqual(seen, refs.slice(0, holder).map((r) => r.key), `byte ${offset}: the chunks before it are served`);
      await file.write(Uint8Array.of(original), 0, 1, offset);
    }
  } finally {
    await file.close();
    await store.close();
  }
  return offsets.length;
}
