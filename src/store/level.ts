/**
 * Opening the store on a LevelDB directory (classic-level through `level`), with options sized for
 * a small device.
 */
import { join } from 'node:path';
import { Level } from 'level';
import { SegmentFiles } from './segments.js';
import { ImaStore, type ImaStoreOptions } from './store.js';

/** LevelDB knobs (classic-level README); see {@link DEVICE_LEVEL_OPTIONS} for the defaults' measurements. */
export interface LevelTuning {
  /** Block cache (bytes). */
  readonly cacheSize: number;
  /** Memtable size before a flush to a table file (bytes). */
  readonly writeBufferSize: number;
  /**
   * Files LevelDB keeps open: 10 for itself, the rest is the table cache. Each cached table is
   * mmapped whole (64-bit LevelDB 1.20 `env_posix.cc` maps up to 1000 files) and the pages LevelDB
   * touched stay in RSS as clean file pages while it is cached. LevelDB raises values below 74 to 74
   * (`db_impl.cc` SanitizeOptions), so at most 64 tables are mapped.
   */
  readonly maxOpenFiles: number;
  /** Uncompressed size of a table block (bytes). */
  readonly blockSize: number;
  /**
   * Size at which compaction starts a new table file (bytes; LevelDB's default 2 MiB). A table ends
   * past it by up to one value, and values are chunks.
   */
  readonly maxFileSize?: number;
}

/**
 * Chosen by `node dist/bench/store.js` (300,000 `mixed` records = 1,069 chunks of ~64 KiB, each a
 * synced put, then one full `records()` read; node 20.20 `--max-semi-space-size=1
 * --max-old-space-size=32`; the 2-core reference machine shared with other jobs, load ~6, so
 * rates vary ±40 % between runs):
 *
 * | setting (cache / write buffer / open files / block) | store-only rec/s | read rec/s | peak RSS MB (anon + file) | block-layer writes ÷ value bytes |
 * |---|---:|---:|---:|---:|
 * | level defaults (8 MiB / 4 MiB / 1000 / 4 KiB) | 74,082 | 457,913 | 138.3 (43.7 + 94.9) | 2.09 |
 * | 1 MiB / 1 MiB / 16 / 4 KiB | 66,814 | 378,298 | 126.7 (32.7 + 95.1) | 2.73 |
 * | **256 KiB / 256 KiB / 16 / 4 KiB** | 81,890 | 353,158 | 97.9 (41.0 + 57.8) | 2.05 |
 * | 256 KiB / 256 KiB / 16 / 16 KiB | 53,211 | 381,459 | 97.3 (39.1 + 58.8) | 2.05 |
 *
 * The small setting keeps throughput (within noise) and cuts peak RSS by ~40 MB, all of it in
 * file-backed pages (fewer table files mapped at once). 2.05x writes = the WAL (1x) plus tables
 * (the synthetic data do not compress). Larger blocks bring nothing for 64 KiB values. (LevelDB
 * ran the rows with 16 open files as 74, see {@link LevelTuning.maxOpenFiles}.)
 *
 * The mapped tables bound the store's file-backed RSS at 64 × (maxFileSize + one chunk), the
 * largest table file: 2.9 MB with LevelDB's 2 MiB (bound ~185 MB), 1.8 MB with 512 KiB (~115 MB;
 * chunks reach ~1.3 MB, one read window). `node dist/bench/ingest.js`, 1M records, table pages in
 * RSS at the end: 22.1 / 18.6 MiB (flavour n / staged) with 2 MiB tables, 12.0 / 9.2 MiB with
 * 512 KiB (48 tables mapped) for 2.83x block-layer writes instead of 2.95-2.97x; 3M records,
 * flavour n: 14.3 MiB, 50 of ~450 tables mapped.
 */
export const DEVICE_LEVEL_OPTIONS: LevelTuning = {
  cacheSize: 256 * 1024,
  writeBufferSize: 256 * 1024,
  maxOpenFiles: 74,
  blockSize: 4096,
  maxFileSize: 512 * 1024,
};

/** Options of {@link openStore}. */
export interface OpenStoreOptions extends ImaStoreOptions {
  /** LevelDB tuning; {@link DEVICE_LEVEL_OPTIONS} by default. */
  readonly level?: Partial<LevelTuning>;
}

/** The directory of the segment files inside the store's LevelDB directory (docs/store.md#segment-files). */
export const SEGMENTS_DIRECTORY = 'segments';

/**
 * Opens (creating if needed) the store in LevelDB directory `location`, chunk values in segment
 * files under `location/segments`. Throws `STORE_LOCKED` if another process has it open,
 * `STORE_VERSION` if a newer imakeep wrote it.
 * @example
 * ```ts
 * const store = await openStore('/var/lib/imakeep');
 * ```
 * @throws {STORE_LOCKED} another process holds the store (LevelDB admits one)
 * @throws {STORE_VERSION} the store's schema is newer than this version
 * @throws {STORE_CORRUPT} the store's metadata does not decode
 */
export async function openStore(location: string, options: OpenStoreOptions = {}): Promise<ImaStore> {
  const db = new Level<Uint8Array, Uint8Array>(location, {
    keyEncoding: 'view',
    valueEncoding: 'view',
    ...DEVICE_LEVEL_OPTIONS,
    ...options.level,
  });
  const segments = options.segments ?? (await SegmentFiles.open(join(location, SEGMENTS_DIRECTORY), location));
  return ImaStore.open(db, { ...options, segments });
}
