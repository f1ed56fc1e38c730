/**
 * The cycle end to end on the FUSE emulator, a real swtpm and a real LevelDB: records leave the
 * kernel (its list stays under a bound), the served log equals the emulator's oracle byte for byte
 * in the binary SHA-1 and SHA-256 lists and the ASCII list, and it replays to the TPM's PCRs.
 * Both flavours, with and without `ima_flush_htable`.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeBinaryList, parseBinaryList } from '../../src/ima/index.js';
import { readCounter } from '../../src/kernel/index.js';
import type { Collector, FlavorChoice } from '../../src/collector/index.js';
import { checkpointNonce, StoreError, type Checkpoint } from '../../src/store/index.js';
import { decodePcrBlob, publicKeyFromTpm2b, verifyQuote } from '../../src/tpm/index.js';
import { collectLog, replayPcr10, startRig, tpmPcr10, type Rig } from './_rig.js';

const TOTAL = 6000;
const BATCH = 1000;

/**
 * Appends TOTAL records in batches, a cycle running WHILE each batch is logged and extended (so
 * quotes land between a record's log and its extend: extra records are normal); the kernel never
 * holds more than about two batches.
 */
async function feed(rig: Rig, collector: Collector): Promise<number> {
  let maxKernel = 0;
  for (let appended = 0; appended < TOTAL; appended += BATCH) {
    const appending = rig.append(BATCH);
    await collector.runOnce();
    await appending;
    const s = rig.emu.stats();
    maxKernel = Math.max(maxKernel, s.recordsCurrent + s.recordsStaged);
  }
  await collector.runOnce(); // the last batch's extends are done: its quote covers everything
  return maxKernel;
}

async function assertLogIsOracle(rig: Rig, collector: Collector): Promise<void> {
  const oracle = rig.oracle();
  assert.equal(parseBinaryList(oracle).length, TOTAL);
  const sha1 = await collectLog(collector, { format: 'binary', bank: 'sha1' });
  assert.ok(sha1.equals(oracle), 'binary SHA-1 log equals the oracle');
  const sha256 = await collectLog(collector, { format: 'binary', bank: 'sha256' });
  assert.ok(sha256.equals(Buffer.from(encodeBinaryList(parseBinaryList(oracle), { bank: 'sha256' }))), 'binary SHA-256 log');
  const ascii = await collectLog(collector, { format: 'ascii', bank: 'sha1' });
  assert.ok(ascii.equals(rig.oracleAscii()), 'ASCII log equals the oracle');
  assert.deepEqual(replayPcr10(sha1), await tpmPcr10(rig.tpm), 'the log replays to the TPM');
}

/**
 * Every stored checkpoint verifies offline with the stored AK, and each nonce binds the boot, the
 * chunk chain at its anchor and the checkpoint before.
 */
async function assertCheckpointChain(rig: Rig, boot: number): Promise<void> {
  const akPublic = rig.store.meta.akPublic;
  assert.ok(akPublic !== null, 'the AK public area is stored');
  const info = await rig.store.bootRecord(boot);
  const heads = new Map<number, Uint8Array | null>([[0, null]]);
  for await (const { chunk, hash } of rig.store.chunks(boot)) heads.set(chunk.firstIndex + chunk.count, hash);
  let previous: Checkpoint | undefined;
  let count = 0;
  for await (const c of rig.store.checkpoints(boot)) {
    const anchor = c.anchor ?? -1;
    const head = heads.get(anchor);
    // The anchor may lie past the count: the kernel logs a record before it extends it (docs/ima-formats.md#pcr-replay).
    assert.ok(head !== undefined, `checkpoint ${c.count} is anchored at a chunk boundary (${anchor})`);
    const want = checkpointNonce({ deviceId: rig.store.meta.deviceId, storeBoot: boot, boot: info, anchor: { count: anchor, head }, previous });
    assert.equal(Buffer.from(c.nonce).toString('hex'), Buffer.from(want).toString('hex'));
    verifyQuote({ attest: c.attest, signature: c.signature, akPublic: publicKeyFromTpm2b(akPublic), nonce: c.nonce, pcrs: c.pcrs });
    assert.ok(c.pcrBlob !== null);
    const hex = (values: readonly { bank: string; pcr: number; value: Uint8Array }[]) => values.map((v) => `${v.bank}:${v.pcr}:${Buffer.from(v.value).toString('hex')}`);
    assert.deepEqual(hex(decodePcrBlob(c.pcrBlob).values), hex(c.pcrs));
    assert.ok(previous === undefined || c.count > previous.count);
    previous = c;
    count++;
  }
  assert.ok(count >= 3, `${count} checkpoints`);
}

const cases: { name: string; flavor: FlavorChoice; flushHtable: boolean; expect: 'n' | 'staged' }[] = [
  { name: 'auto → n (no ima_flush_htable)', flavor: 'auto', flushHtable: false, expect: 'n' },
  { name: 'auto → staged (ima_flush_htable)', flavor: 'auto', flushHtable: true, expect: 'staged' },
  { name: 'staged without ima_flush_htable', flavor: 'staged', flushHtable: false, expect: 'staged' },
];

describe('collector removal on the emulator', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const rig = await startRig({ flushHtable: c.flushHtable });
      try {
        const collector = await rig.collector({ flavor: c.flavor });
        const maxKernel = await feed(rig, collector);
        const status = collector.status();
        assert.equal(status.flavor, c.expect);
        const stats = rig.emu.stats();
        assert.ok(maxKernel <= 2 * BATCH, `kernel list stayed under 2 batches (max ${maxKernel})`);
        assert.equal(stats.recordsDeleted, status.removed, 'the emulator deleted what the journal says');
        assert.ok(status.removed >= TOTAL - BATCH, `removed ${status.removed} of ${TOTAL}`);
        assert.equal(readCounter(`${rig.emu.imaDir}/runtime_measurements_count`), TOTAL - status.removed - (status.staged ?? 0));
        assert.equal(status.stored, TOTAL);
        assert.equal((await rig.store.journal(status.boot)).removed, status.removed);
        assert.ok(status.metrics.writerLockHoldMs.count > 0 && status.metrics.writerLockHoldMs.max > 0);
        if (c.flushHtable) {
          // Whole records freed: only the hash table and the records not yet removed stay modeled.
          assert.ok(stats.kmemBytes < (TOTAL - status.removed + 1) * 1024 + 8192, `kmem ${stats.kmemBytes}`);
        }
        await assertLogIsOracle(rig, collector);
        await assertCheckpointChain(rig, status.boot);
        await collector.close();
      } finally {
        await rig.stop();
      }
    });
  }

  it('chunks are sealed at the configured size bound, within one record', async () => {
    const rig = await startRig();
    try {
      const maxBytes = 8192;
      const collector = await rig.collector({ flavor: 'none', chunkBounds: { maxBytes, maxAgeMs: 60_000 } });
      await rig.append(1500);
      await collector.runOnce();
      let chunks = 0;
      let records = 0;
      for await (const { chunk } of rig.store.chunks(collector.boot)) {
        const last = parseBinaryList(chunk.records).at(-1);
        assert.ok(last !== undefined);
        const lastBytes = encodeBinaryList([last]).length;
        // The bound is reached by the chunk's last record and by no record before it.
        assert.ok(chunk.records.length - lastBytes < maxBytes, `chunk at ${chunk.firstIndex}: ${chunk.records.length} B`);
        chunks++;
        records += chunk.count;
      }
      assert.equal(records, 1500);
      assert.ok(chunks >= Math.floor(rig.oracle().length / maxBytes), `${chunks} chunks for ${rig.oracle().length} B`);
      await collector.close();
    } finally {
      await rig.stop();
    }
  });

  it('a chunk commit failing in the middle of a read batch loses no record of that batch', async () => {
    const rig = await startRig();
    try {
      const collector = await rig.collector({ flavor: 'n', chunkBounds: { maxBytes: 8192, maxAgeMs: 60_000 } });
      await rig.append(3000);
      // The third commit of the drain fails as on a full disk; the reader is past the whole batch.
      const store = rig.store;
      const appendChunk = store.appendChunk.bind(store);
      let commits = 0;
      store.appendChunk = async (boot, draft) => {
        if (++commits === 3) throw new StoreError('STORE_WRITE_FAILED', 'injected: no space left on device');
        return appendChunk(boot, draft);
      };
      await assert.rejects(collector.runOnce(), { code: 'STORE_WRITE_FAILED' });
      assert.equal(rig.emu.stats().recordsDeleted, 0, 'nothing removed while a commit fails');
      await collector.runOnce();
      assert.equal(collector.status().stored, 3000);
      assert.equal(rig.emu.stats().recordsDeleted, 3000, 'every record stored, quoted and removed');
      assert.ok((await collectLog(collector, { format: 'binary', bank: 'sha1' })).equals(rig.oracle()), 'no gap in the log');
      await collector.close();
    } finally {
      await rig.stop();
    }
  });

  it('flavor none archives and serves, removes nothing', async () => {
    const rig = await startRig();
    try {
      const collector = await rig.collector({ flavor: 'none' });
      await rig.append(1500);
      await collector.runOnce();
      await collector.runOnce();
      assert.equal(rig.emu.stats().recordsDeleted, 0);
      assert.equal(collector.status().stored, 1500);
      assert.equal(collector.status().lastCheckpoint?.count, 1500);
      const sha1 = await collectLog(collector, { format: 'binary', bank: 'sha1' });
      assert.ok(sha1.equals(rig.oracle()));
      await collector.close();
    } finally {
      await rig.stop();
    }
  });
});
