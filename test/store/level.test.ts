/** The store suite on real LevelDB (classic-level via `level`) in a temp directory. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import type { StoreDatabase } from '../../src/store/index.js';
import { storeSuite } from './suite.js';

/** An unopened LevelDB handle on `dir` with the store's encodings. */
export function levelAt(dir: string): StoreDatabase {
  return new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
}

storeSuite({
  name: 'level (LevelDB)',
  async create() {
    const dir = await mkdtemp(join(tmpdir(), 'imakeep-store-'));
    return { db: levelAt(dir), reopen: () => levelAt(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
  },
});
