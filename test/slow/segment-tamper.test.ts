/**
 * Every byte of a segment file, flipped, fails a walk of the boot's chunks with STORE_CORRUPT
 * naming the chunk that holds it, after yielding the chunks before it: no byte a reference covers
 * is served unchecked, whichever run of consecutive values it is read in (src/store/store.ts
 * ChunkValues). The default suite flips a sample (test/store/segments.test.ts).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { assertSegmentMutantsFail } from '../store/_tamper.js';

it('every byte of a segment, flipped, is STORE_CORRUPT naming the chunk holding it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'imakeep-segment-tamper-'));
  try {
    const tried = await assertSegmentMutantsFail(dir, 'all');
    assert.ok(tried > 1000, `${tried} bytes flipped`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
