/**
 * Faults injected through the collector's interfaces, on the emulator + swtpm + LevelDB:
 * a crash (a hook that throws) at every named step of both flavours followed by recovery; a
 * pending removal over periodic data decided by replay; a quote that fits no prefix
 * (QUOTE_MISMATCH, nothing removed); EBUSY from another reader; ESTALE/EACCES after suspend; a new
 * boot segment. After each, the log still equals the emulator's oracle.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { encodeBinaryList, type ImaRecord } from '../../src/ima/index.js';
import { CollectorError, type Collector, type CollectorStep, type FlavorChoice } from '../../src/collector/index.js';
import { collectLog, quotesWith, replayPcr10, startRig, tpmPcr10, type Rig } from './_rig.js';
import { makeRecord, nameNgField, digestNgField } from '../../src/testing/index.js';

/** What a crash looks like to the cycle: the hook throws at the step. */
class SimulatedCrash extends Error {}

/** How a cycle failed, for an exact assertion. */
function describeFailure(e: unknown): string {
  return e instanceof SimulatedCrash ? `SimulatedCrash: ${e.message}` : `unexpected: ${String(e)}`;
}

/** A collector whose hook throws once at `step`. */
async function crashingCollector(rig: Rig, flavor: FlavorChoice, step: CollectorStep | undefined): Promise<{ collector: Collector; fired: () => boolean }> {
  let fired = false;
  const collector = await rig.collector({
    flavor,
    hooks: {
      step(s) {
        if (s === step && !fired) {
          fired = true;
          throw new SimulatedCrash(`crash at ${s}`);
        }
      },
    },
  });
  return { collector, fired: () => fired };
}

async function assertLogIsOracle(rig: Rig, collector: Collector): Promise<void> {
  const sha1 = await collectLog(collector, { format: 'binary', bank: 'sha1' });
  assert.equal(sha1.length, rig.oracle().length);
  assert.ok(sha1.equals(rig.oracle()), 'log equals the oracle: nothing lost, duplicated or reordered');
  assert.deepEqual(replayPcr10(sha1), await tpmPcr10(rig.tpm));
}

/** After recovery, the journal's T is what the kernel really removed. */
function assertJournalMatchesKernel(rig: Rig, collector: Collector): void {
  assert.equal(collector.status().removed, rig.emu.stats().recordsDeleted, 'T = records the kernel removed');
}

const STEPS: Record<'n' | 'staged', CollectorStep[]> = {
  n: ['chunk-committed', 'checkpoint-stored', 'intent-journaled', 'kernel-written', 'outcome-journaled'],
  staged: ['chunk-committed', 'checkpoint-stored', 'intent-journaled', 'kernel-written', 'staged-journaled', 'staged-covered', 'staged-deleted', 'outcome-journaled'],
};

describe('collector crash points (hook throws, then recovery)', () => {
  for (const flavor of ['n', 'staged'] as const) {
    it(`flavour ${flavor}: every step`, async () => {
      const rig = await startRig({ flushHtable: flavor === 'staged' });
      try {
        for (const step of STEPS[flavor]) {
          const { collector, fired } = await crashingCollector(rig, flavor, step);
          assertJournalMatchesKernel(rig, collector);
          // Right after recovery (a staged list may be left): stored + staged + current = the oracle.
          await assertLogIsOracle(rig, collector);
          for (let cycle = 0; cycle < 4 && !fired(); cycle++) {
            const appending = rig.append(400);
            const outcome = await collector.runOnce().then(() => 'completed', (e: unknown) => describeFailure(e));
            await appending;
            // A cycle that does not reach the step completes; the one that does fails with the crash.
            assert.equal(outcome, fired() ? `SimulatedCrash: crash at ${step}` : 'completed');
          }
          assert.ok(fired(), `the cycle reached ${step}`);
          await collector.close();
          await rig.reopenStore();
        }
        const { collector } = await crashingCollector(rig, flavor, undefined);
        assertJournalMatchesKernel(rig, collector);
        await collector.runOnce();
        await collector.runOnce();
        assert.ok(rig.emu.stats().recordsDeleted > 0);
        await assertLogIsOracle(rig, collector);
        await collector.close();
      } finally {
        await rig.stop();
      }
    });
  }
});

/** One record repeated: the kernel's head fits "removed" and "not removed" alike. */
function periodicRecords(n: number): ImaRecord[] {
  const rec = makeRecord('ima-ng', [digestNgField('sha256', new Uint8Array(32).fill(7)), nameNgField('/etc/ld.so.cache')]);
  return Array.from({ length: n }, () => rec);
}

describe('collector recovery over periodic data (decided by replay)', () => {
  for (const [step, expectRemoved] of [['kernel-written', 300], ['intent-journaled', 0]] as const) {
    it(`crash at ${step}: T = ${expectRemoved}`, async () => {
      const rig = await startRig();
      try {
        await rig.emu.append(periodicRecords(300));
        const { collector } = await crashingCollector(rig, 'n', step);
        await assert.rejects(collector.runOnce(), SimulatedCrash);
        await collector.close();
        // More of the same record: both readings now fit the kernel's head.
        await rig.emu.append(periodicRecords(300));
        await rig.reopenStore();
        let pcrReads = 0;
        const counting = quotesWith(rig.tpm, (tpm) => ({
          readPcrs: (pcrs) => {
            pcrReads++;
            return tpm.readPcrs(pcrs);
          },
        }));
        const recovered = await rig.collector({ flavor: 'n' }, counting);
        assert.ok(pcrReads >= 2, 'decided by replay against the TPM (PCRs read before and after the list)');
        assert.equal(recovered.status().removed, expectRemoved);
        assertJournalMatchesKernel(rig, recovered);
        await recovered.runOnce();
        await assertLogIsOracle(rig, recovered);
        await recovered.close();
      } finally {
        await rig.stop();
      }
    });
  }
});

describe('collector faults', () => {
  it('a quote that fits no prefix: QUOTE_MISMATCH with bank and values, nothing removed', async () => {
    const rig = await startRig();
    try {
      const collector = await rig.collector({ flavor: 'n' });
      await rig.append(500);
      await collector.runOnce();
      const removedBefore = rig.emu.stats().recordsDeleted;
      assert.equal(removedBefore, 500);
      await rig.append(500);
      // A PCR 10 extend behind IMA's back (through the TPM interface): no log prefix replays to it.
      await rig.tpm.pcrExtend(10, { sha1: randomBytes(20), sha256: randomBytes(32) });
      const err = await collector.runOnce().then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof CollectorError);
      assert.equal(err.code, 'QUOTE_MISMATCH');
      assert.equal(err.details.bank, 'sha1');
      assert.equal(err.details.pcr, 10);
      assert.equal(err.details.from, 500);
      assert.equal(err.details.to, 1000);
      assert.equal(err.details.quoted, (await tpmPcr10(rig.tpm)).sha1);
      assert.notEqual(err.details.replayed, err.details.quoted);
      assert.equal(rig.emu.stats().recordsDeleted, removedBefore, 'nothing removed');
      const status = collector.status();
      assert.equal(status.condition?.code, 'QUOTE_MISMATCH');
      assert.equal(status.metrics.errors.QUOTE_MISMATCH, 1);
      assert.equal(status.stored, 1000, 'records are still archived');
      assert.equal((await rig.store.journal(status.boot)).pending, null);
      await collector.close();
    } finally {
      await rig.stop();
    }
  });

  it('EBUSY: another reader holds the list; removal waits, then proceeds', async () => {
    const rig = await startRig();
    try {
      const collector = await rig.collector({ flavor: 'n' });
      await rig.append(300);
      const fd = openSync(`${rig.emu.imaDir}/binary_runtime_measurements`, 'r');
      try {
        const err = await collector.runOnce().then(() => undefined, (e: unknown) => e);
        assert.equal((err as { code?: string }).code, 'KERNEL_EBUSY');
        assert.equal(rig.emu.stats().recordsDeleted, 0);
        assert.equal((await rig.store.journal(collector.boot)).pending, null, 'intent closed as not done');
      } finally {
        closeSync(fd);
      }
      await collector.runOnce();
      assert.equal(rig.emu.stats().recordsDeleted, 300);
      await assertLogIsOracle(rig, collector);
      await collector.close();
    } finally {
      await rig.stop();
    }
  });

  for (const [flavor, code] of [['n', 'KERNEL_ESTALE'], ['staged', 'KERNEL_EACCES']] as const) {
    it(`suspend (kexec under way), flavour ${flavor}: ${code}, removal halts, nothing stored twice`, async () => {
      const rig = await startRig();
      try {
        const collector = await rig.collector({ flavor });
        await rig.append(200);
        rig.emu.setSuspended(true);
        await collector.runOnce();
        const status = collector.status();
        assert.equal(status.removalHalted, code);
        assert.equal(status.stored, 200);
        assert.equal(rig.emu.stats().recordsDeleted, 0);
        await collector.runOnce();
        assert.equal(collector.status().stored, 200, 'the batch is stored once');
        await assertLogIsOracle(rig, collector);
        await collector.close();
      } finally {
        rig.emu.setSuspended(false);
        await rig.stop();
      }
    });
  }

  it("AKs left loaded by a killed daemon (TPM_RC_OBJECT_MEMORY) are flushed and the quote retried", async () => {
    const rig = await startRig();
    try {
      for (let i = 0; i < 3; i++) await rig.tpm.createAk(); // swtpm has 3 transient slots
      assert.equal((await rig.tpm.transientHandles()).length, 3);
      const collector = await rig.collector({ flavor: 'n' });
      await rig.append(200);
      await collector.runOnce();
      assert.equal(rig.emu.stats().recordsDeleted, 200);
      assert.equal((await rig.tpm.transientHandles()).length, 0, 'nothing left loaded');
      await collector.close();
    } finally {
      await rig.stop();
    }
  });

  it('a TPM reset (resetCount moved in a quote) begins a new boot segment', async () => {
    const rig = await startRig();
    try {
      let bump = 0;
      const resetting = quotesWith(rig.tpm, (tpm) => ({
        async quote(nonce, pcrs) {
          const q = await tpm.quote(nonce, pcrs);
          const clockInfo = { ...q.parsed.clockInfo, resetCount: q.parsed.clockInfo.resetCount + bump };
          return { ...q, parsed: { ...q.parsed, clockInfo } };
        },
      }));
      const collector = await rig.collector({ flavor: 'n' }, resetting);
      await rig.append(300);
      await collector.runOnce();
      assert.equal(collector.boot, 0);
      const resetCount = (await rig.store.bootRecord(0)).resetCount;
      bump = 1;
      await collector.runOnce();
      assert.equal(collector.boot, 1, 'a new segment');
      assert.equal(collector.removed, 0);
      assert.equal((await rig.store.bootRecord(1)).resetCount, (resetCount ?? 0) + 1);
      assert.equal((await rig.store.bootRecord(1)).kernelBootId, (await rig.store.bootRecord(0)).kernelBootId);
      assert.equal(await rig.store.storedCount(0), 300, 'the earlier segment is kept');
      await collector.close();
    } finally {
      await rig.stop();
    }
  });

  it('a new kernel boot id begins a new boot segment; the earlier boot stays servable', async () => {
    const storeParent = mkdtempSync(join(tmpdir(), 'imakeep-boots-'));
    const storeDir = join(storeParent, 'store');
    try {
      const first = await startRig({ storeDir, bootId: '11111111-0000-4000-8000-000000000001' });
      let firstOracle: Buffer;
      try {
        const collector = await first.collector({ flavor: 'n' });
        await first.append(800);
        await collector.runOnce();
        assert.equal(first.emu.stats().recordsDeleted, 800);
        firstOracle = first.oracle();
        await collector.close();
      } finally {
        await first.stop();
      }
      const second = await startRig({ storeDir, bootId: '22222222-0000-4000-8000-000000000002', seed: 99 });
      try {
        const collector = await second.collector({ flavor: 'n' });
        assert.equal(collector.boot, 1);
        assert.equal(collector.removed, 0);
        await second.append(500);
        await collector.runOnce();
        await assertLogIsOracle(second, collector);
        const boot0: ImaRecord[] = [];
        for await (const { record } of second.store.records(0)) boot0.push(record);
        assert.ok(Buffer.from(encodeBinaryList(boot0)).equals(firstOracle), 'boot 0 is kept whole');
        assert.equal((await second.store.bootRecord(0)).kernelBootId, '11111111-0000-4000-8000-000000000001');
        await collector.close();
      } finally {
        await second.stop();
      }
    } finally {
      rmSync(storeParent, { recursive: true, force: true });
    }
  });
});
