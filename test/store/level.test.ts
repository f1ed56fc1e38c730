/**
 * The store suite on real LevelDB (classic-level via `level`) in a temp directory: chunk values in
 * segment files (as `openStore` opens it), and in LevelDB itself (schema 1's layout, still written
 * by a store opened without segment files).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import type { StoreDatabase } from '../../src/store/index.js';
import { SegmentFiles } from '../../src/testing/index.js';
import { storeSuite } from './suite.js';

/** An unopened LevelDB handle on `dir` with the store's encodings. */
export function levelAt(dir: string): StoreDatabase {
  return new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
}

storeSuite({
  name: 'level (LevelDB) with segment files',
  async create() {
    const dir = await mkdtemp(join(tmpdir(), 'imakeep-store-'));
    const segments = await SegmentFiles.open(join(dir, 'segments'), dir);
    return { db: levelAt(dir), reopen: () => levelAt(dir), segments, cleanup: () => rm(dir, { recursive: true, force: true }) };
  },
});

storeSuite({
  name: 'level (LevelDB), chunk values in LevelDB',
  async create() {
    const dir = await mkdtemp(join(tmpdir(), 'imakeep-store-'));
    return { db: levelAt(dir), reopen: () => levelAt(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
  },
});
