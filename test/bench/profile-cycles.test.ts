/**
 * bench/profile-cycles.ts: only samples inside the spans count, each charged to the innermost
 * frame of ours, to V8's state, or to node when no frame of ours is on the stack.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { profileCycles, type CpuProfile } from '../../bench/profile-cycles.js';

const frame = (functionName: string, url = '', lineNumber = 0) => ({ functionName, url, lineNumber });

/** root -> drain (ours, src/collector) -> hash (node); root -> (garbage collector); root -> tick (node only). */
const PROFILE: CpuProfile = {
  startTime: 1000,
  nodes: [
    { id: 1, callFrame: frame('(root)'), children: [2, 4, 5, 6] },
    { id: 2, callFrame: frame('drainFrom', 'file:///r/dist/src/collector/cycle.js', 139), children: [3] },
    { id: 3, callFrame: frame('hash', 'node:internal/crypto/hash', 220) },
    { id: 4, callFrame: frame('(garbage collector)') },
    { id: 5, callFrame: frame('processTicksAndRejections', 'node:internal/process/task_queues', 9) },
    { id: 6, callFrame: frame('(idle)') },
  ],
  // Sample times: 1010 (hash), 1020 (gc), 1030 (hash), 1040 (tick), 1050 (idle), 1060 (hash), 1070 (gc)
  samples: [3, 4, 3, 5, 6, 3, 4],
  timeDeltas: [10, 10, 10, 10, 10, 10, 10],
};

describe('profileCycles', () => {
  it('charges the samples inside the spans to classes, our innermost frame and the sampled function', () => {
    const p = profileCycles(PROFILE, [[1005, 1040], [1055, 1065]]);
    assert.equal(p.totalUs, 50, 'samples at 1010, 1020, 1030, 1040 and 1060');
    assert.deepEqual([...p.byClass].sort(), [['(garbage collector)', 10], ['node (no frame of ours)', 10], ['src/collector', 30]]);
    assert.deepEqual([...p.byFunction], [['drainFrom src/collector/cycle.js:140', 30]]);
    assert.deepEqual([...p.byLeaf].sort(), [['(garbage collector)', 10], ['hash internal/crypto/hash:221', 30], ['processTicksAndRejections internal/process/task_queues:10', 10]]);
  });

  it('counts nothing outside the spans', () => {
    const p = profileCycles(PROFILE, [[0, 1009], [1071, 2000]]);
    assert.equal(p.totalUs, 0);
    assert.equal(p.byClass.size, 0);
  });
});
