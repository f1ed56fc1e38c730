/**
 * Invariant 4 (design.md, "Bounded memory") for resident memory, not only the V8 heap: 200,000
 * records through the collector over the FUSE securityfs emulator, in a child process under the
 * daemon's V8 flags and malloc settings (bench/ingest.ts `runIngestInChild`, `DAEMON_MALLOC_ENV`;
 * with glibc's defaults RssAnon grows with the log, 53 → 85 MiB over 1M records). The emulator
 * logs, the software TPM of hw/soft-tpm.ts quotes, the store is a real LevelDB on
 * disk: swtpm and the rig of test/collector/_rig.ts would make this a 2-minute test of the same
 * collector code.
 *
 * Bounds, from the state at 20k records (after a full GC, so retained memory, not garbage):
 * - RssAnon grows by at most {@link RSS_ANON_SLACK_MIB}. Measured: 33.4–45.4 MiB at every sample
 *   of five runs from 10k to 3M records, at most +7 MiB from 20k within one run (malloc's free
 *   lists and V8's pages vary), so 16 MiB is twice that; a leak of 94 bytes per record (40 % of a
 *   record's 234 bytes) exceeds it over 180k records, and so do glibc's malloc defaults (66.3 →
 *   82.9 MiB from 20k to 200k).
 * - heapUsed grows by at most {@link HEAP_SLACK_MIB}: it measured 9.4 → 7.9 MiB from 10k to 1M;
 *   4 MiB over 180k records is 23 bytes per record.
 * - RssFile has no slack to assert: its growing part is LevelDB's mmapped tables (clean page
 *   cache), bounded by the table cache, so the test asserts that at most 64 tables are mapped
 *   (src/store/level.ts `maxOpenFiles`).
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { runIngestInChild, type MemorySample } from '../../bench/ingest.js';

const RECORDS = 200_000;
const BASELINE = 20_000;
const RSS_ANON_SLACK_MIB = 16;
const HEAP_SLACK_MIB = 4;
/** LevelDB's table cache: max_open_files (raised to at least 74) minus its 10 own files. */
const MAX_MAPPED_TABLES = 64;

const mib = (kib: number): number => Math.round((kib / 1024) * 10) / 10;

function describeSample(m: MemorySample): string {
  return `${m.records} records: RssAnon ${mib(m.rssAnonKiB)} MiB, RssFile ${mib(m.rssFileKiB)} MiB (LevelDB tables ${mib(m.ldbKiB)} MiB in ${m.ldbMappings} maps), heapUsed ${m.heapUsedMiB} MiB`;
}

it(`RssAnon and heap after ${RECORDS} records stay within a fixed bound of their values at ${BASELINE}`, (t) => {
  const result = runIngestInChild({ records: RECORDS, batch: 5000, flavor: 'n', sampleAt: [BASELINE, RECORDS] });
  const base = result.memory.find((m) => m.records === BASELINE);
  const end = result.memory.find((m) => m.records === RECORDS);
  assert.ok(base !== undefined && end !== undefined, `samples at ${BASELINE} and ${RECORDS}: ${JSON.stringify(result.memory)}`);
  t.diagnostic(describeSample(base));
  t.diagnostic(describeSample(end));
  assert.equal(result.removed, RECORDS, 'every record was stored and removed from the kernel');
  const anonGrowth = mib(end.rssAnonKiB - base.rssAnonKiB);
  assert.ok(anonGrowth <= RSS_ANON_SLACK_MIB, `RssAnon grew ${anonGrowth} MiB (bound ${RSS_ANON_SLACK_MIB})`);
  const heapGrowth = end.heapUsedMiB - base.heapUsedMiB;
  assert.ok(heapGrowth <= HEAP_SLACK_MIB, `heapUsed grew ${heapGrowth} MiB (bound ${HEAP_SLACK_MIB})`);
  assert.ok(end.ldbMappings <= MAX_MAPPED_TABLES, `${end.ldbMappings} LevelDB tables mapped (table cache ${MAX_MAPPED_TABLES})`);
});
