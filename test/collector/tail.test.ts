/**
 * The collector as serve's KernelTail: when everything from the index asked for was removed from
 * the kernel (T grew past it), the iteration says where the kernel's part begins now with an empty
 * batch at T (src/serve/sources.ts), rather than ending as if the log ended there.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runningKernelTail, type Collector } from '../../src/collector/index.js';
import { startRig, type Rig } from './_rig.js';

async function batchesFrom(collector: Collector, from: number): Promise<{ firstIndex: number; count: number }[]> {
  const out: { firstIndex: number; count: number }[] = [];
  for await (const batch of collector.tailBatches(from)) out.push({ firstIndex: batch.firstIndex, count: batch.records.length });
  return out;
}

describe('Collector.tailBatches', () => {
  let rig: Rig;
  let collector: Collector;

  before(async () => {
    rig = await startRig();
    collector = await rig.collector({ flavor: 'n' });
  });

  after(async () => {
    await collector?.close();
    await rig?.stop();
  });

  it('everything from `from` removed: one empty batch at T; records still in the kernel: batches from there', async () => {
    await rig.append(30);
    await collector.runOnce();
    await collector.runOnce(); // the last extends are done: the quote covers every record
    const T = collector.removed;
    assert.equal(T, 30);
    assert.deepEqual(await batchesFrom(collector, 10), [{ firstIndex: 30, count: 0 }]);
    assert.deepEqual(await batchesFrom(collector, 30), []);
    await rig.append(5);
    assert.deepEqual(await batchesFrom(collector, 10), [{ firstIndex: 30, count: 5 }]);
    assert.deepEqual(await batchesFrom(collector, 32), [{ firstIndex: 32, count: 3 }]);
  });

  it('runningKernelTail (imakeep log/serve without the daemon): the running boot\'s tail, none for another kernel', async () => {
    const tail = await runningKernelTail(rig.store, rig.emu.securityfsRoot, rig.bootIdPath);
    assert.equal(tail?.boot, collector.boot);
    assert.equal(await tail?.end(), 35);
    const other = join(rig.work, 'other_boot_id');
    writeFileSync(other, '00000000-0000-4000-8000-000000000000\n');
    assert.equal(await runningKernelTail(rig.store, rig.emu.securityfsRoot, other), undefined);
  });
});
