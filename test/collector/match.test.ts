/**
 * Matching a quote to the stored records: the collector keeps the replay of every record it drained
 * and tries that state first. A checkpoint must cover the shortest prefix the quote attests: records
 * at the end on a PCR the quote does not select are not covered by it (Invariant 1), so the kept
 * state is used only when the last record extended the quoted PCR.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Collector } from '../../src/collector/index.js';
import { startRig, type Rig } from './_rig.js';

async function checkpointCounts(rig: Rig, boot: number): Promise<number[]> {
  const counts: number[] = [];
  for await (const c of rig.store.checkpoints(boot)) counts.push(c.count);
  return counts;
}

describe('quote matching', () => {
  let rig: Rig;
  let collector: Collector;
  before(async () => {
    rig = await startRig({ seed: 31 });
    collector = await rig.collector({ flavor: 'none' });
  });
  after(async () => {
    await collector.close();
    await rig.stop();
  });

  it('covers exactly the drained records when the last one extended PCR 10', async () => {
    await rig.append(40);
    await collector.runOnce();
    assert.deepEqual(await checkpointCounts(rig, collector.boot), [40]);
  });

  it('stops before trailing records on a PCR the quote does not select', async () => {
    const onPcr10 = [...rig.workload.records(7)];
    const onPcr11 = [...rig.workload.records(3)].map((r) => ({ ...r, pcr: 11 }));
    await rig.emu.append([...onPcr10, ...onPcr11]);
    await collector.runOnce();
    // 50 records drained and stored; the quote of PCR 10 attests only the first 47.
    assert.equal(collector.status().drained, 50);
    assert.deepEqual(await checkpointCounts(rig, collector.boot), [40, 47]);
  });

  it('covers the PCR 11 records once a later PCR 10 record follows them', async () => {
    await rig.append(2);
    await collector.runOnce();
    assert.deepEqual(await checkpointCounts(rig, collector.boot), [40, 47, 52]);
  });
});
