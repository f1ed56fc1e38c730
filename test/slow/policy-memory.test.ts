/**
 * A 1,000,000-record log judged against a runtime policy in bounded memory: the list streamed in
 * 256 KiB chunks through `judgeList` (zero-copy parsing), findings not collected; after a full GC,
 * RssAnon after 1 M records within 16 MiB of RssAnon after 100 k, heapUsed within 4 MiB. The log
 * cycles 1,000 distinct files measured with ima-sig (no signature), a kexec-cmdline buffer and a
 * violation every 1,000 records, so every path of the judge runs; the counts are asserted exactly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { encodeBinaryRecord, type ImaRecord } from '../../src/ima/index.js';
import { loadRuntimePolicy, judgeList, PolicyBuilder, PolicyJudge } from '../../src/policy/index.js';
import { digestNgField, makeRecord, nameNgField } from '../../src/testing/index.js';

const RECORDS = 1_000_000;
const FILES = 1000;
const CHUNK = 256 * 1024;

setFlagsFromString('--expose-gc');
/** A full collection, so what is measured is what is retained, not garbage not yet collected. */
const gc = runInNewContext('gc') as () => void;

function rssAnonKiB(): number {
  gc();
  const m = /^RssAnon:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? NaN);
}

/** The records the log cycles through: files, one buffer, one violation. */
function cycle(): { records: ImaRecord[]; encoded: Uint8Array[] } {
  const records: ImaRecord[] = [];
  for (let i = 0; i < FILES; i++) {
    const digest = new Uint8Array(createHash('sha256').update(`file ${i}`).digest());
    records.push(makeRecord('ima-sig', [digestNgField('sha256', digest), nameNgField(`/usr/lib/x86_64-linux-gnu/lib${i}.so`), new Uint8Array(0)]));
  }
  const cmdline = new TextEncoder().encode('BOOT_IMAGE=/boot/vmlinuz root=/dev/vda ro');
  records[10] = makeRecord('ima-buf', [digestNgField('sha256', new Uint8Array(createHash('sha256').update(cmdline).digest())), nameNgField('kexec-cmdline'), cmdline]);
  records[20] = makeRecord('ima-sig', [digestNgField('sha256', new Uint8Array(32)), nameNgField('/tmp/written'), new Uint8Array(0)], { violation: true });
  return { records, encoded: records.map((r) => encodeBinaryRecord(r)) };
}

/**
 * The list as chunks, generated as they are read into ONE reused buffer (judgeList is done with a
 * chunk when it asks for the next), so the generator allocates nothing and what grows is the
 * judge's. `onRecords` sees the running count.
 */
async function* chunks(encoded: readonly Uint8Array[], count: number, onRecords: (n: number) => void): AsyncGenerator<Uint8Array> {
  const buf = new Uint8Array(CHUNK + 4096);
  let used = 0;
  for (let n = 0; n < count; n++) {
    const rec = encoded[n % encoded.length] as Uint8Array;
    if (used + rec.length > CHUNK) {
      yield buf.subarray(0, used);
      used = 0;
      onRecords(n);
    }
    buf.set(rec, used);
    used += rec.length;
  }
  yield buf.subarray(0, used);
  onRecords(count);
}

test('1 M records judged with RssAnon flat', { timeout: 600_000 }, async () => {
  const { records, encoded } = cycle();
  const builder = new PolicyBuilder();
  for (const rec of records) builder.add(rec);
  const policy = loadRuntimePolicy(JSON.parse(JSON.stringify({ ...builder.document(), excludes: ['/usr/lib/x86_64-linux-gnu/lib99\\d\\.so$'] })));
  const judge = new PolicyJudge(policy, { collect: false });
  let at100k = 0;
  let at1m = 0;
  let heap100k = 0;
  const read = await judgeList(
    chunks(encoded, RECORDS, (n) => {
      if (at100k === 0 && n >= 100_000) {
        at100k = rssAnonKiB();
        heap100k = process.memoryUsage().heapUsed;
      }
    }),
    judge,
  );
  at1m = rssAnonKiB();
  const heap1m = process.memoryUsage().heapUsed;

  assert.equal(read, RECORDS);
  const v = judge.verdict();
  assert.equal(v.ok, true);
  assert.equal(v.failures.length, 0, 'findings are not collected');
  assert.equal(v.summary.records, RECORDS);
  assert.equal(v.summary.violations, RECORDS / FILES);
  // lib990.so .. lib999.so are excluded: 10 of every 1,000 records.
  assert.equal(v.summary.excluded, (RECORDS / FILES) * 10);
  assert.ok(at1m <= at100k + 16 * 1024, `RssAnon ${at100k} KiB at 100 k records, ${at1m} KiB at 1 M`);
  assert.ok(heap1m <= heap100k + 4 * 1024 * 1024, `heapUsed ${heap100k} B at 100 k records, ${heap1m} B at 1 M`);
});
