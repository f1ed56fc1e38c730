/**
 * The collector's pure parts: judging a pending removal from the kernel's head, choosing the
 * flavour, bounded timings, the crash seam's parser, and byte offsets of stored record ranges (a
 * real LevelDB store). The chained nonce is the store's rule: test/store/nonce.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImaWorkload, PcrReplay, encodeBinaryList, type ImaRecord } from '../../src/ima/index.js';
import type { KernelCapabilities } from '../../src/kernel/index.js';
import { ChunkBuilder, openStore } from '../../src/store/index.js';
import { SAMPLE_WINDOW, Timing, chooseFlavor, judgeRemoval, parseCrashAt, storedBytes } from '../../src/collector/index.js';

function records(n: number, seed = 1): ImaRecord[] {
  return [...new ImaWorkload({ seed, template: 'mixed', violationRate: 0.05 }).records(n)];
}

describe('judgeRemoval', () => {
  const stored = records(30);
  const at = (from: number, n: number) => stored.slice(from, from + n);
  it('not done: the kernel still starts with the records at T', () => {
    assert.equal(judgeRemoval({ n: 5, kernelHead: at(10, 8), kernelHeadComplete: false, storedAtT: at(10, 8), storedAtTn: at(15, 8) }), 'not-done');
  });
  it('done: the kernel starts with the records at T+n', () => {
    assert.equal(judgeRemoval({ n: 5, kernelHead: at(15, 8), kernelHeadComplete: false, storedAtT: at(10, 8), storedAtTn: at(15, 8) }), 'done');
  });
  it('done: an empty list fits only "removed"', () => {
    assert.equal(judgeRemoval({ n: 5, kernelHead: [], kernelHeadComplete: true, storedAtT: [], storedAtTn: [] }), 'done');
  });
  it('done: a list shorter than n cannot be "not removed", even if it starts like T', () => {
    assert.equal(judgeRemoval({ n: 5, kernelHead: at(10, 3), kernelHeadComplete: true, storedAtT: at(10, 3), storedAtTn: [] }), 'done');
  });
  it('ambiguous: periodic records fit both readings', () => {
    const same = Array.from({ length: 8 }, () => stored[0] as ImaRecord);
    assert.equal(judgeRemoval({ n: 4, kernelHead: same, kernelHeadComplete: false, storedAtT: same, storedAtTn: same }), 'ambiguous');
  });
  it('neither: the head is something else (another agent removed records)', () => {
    assert.equal(judgeRemoval({ n: 5, kernelHead: at(20, 8), kernelHeadComplete: false, storedAtT: at(10, 8), storedAtTn: at(15, 8) }), 'neither');
  });
});

function caps(flavours: ('n' | 'staged')[], flushHtable: boolean): KernelCapabilities {
  return {
    imaDir: '/i',
    banks: ['sha1'],
    perBankFiles: true,
    unknownBankFiles: [],
    binaryListPath: '/i/b',
    stagedBinaryListPath: '/i/s',
    countPath: '/i/c',
    violationsPath: '/i/v',
    listsWritable: flavours.length > 0,
    writeOpen: flavours.length > 0 ? 'ok' : 'EPERM',
    flushHtable,
    flavours,
    removal: flavours[0] ?? 'none',
  };
}

describe('chooseFlavor', () => {
  it('auto prefers staged with ima_flush_htable, else n, else staged, else none', () => {
    assert.equal(chooseFlavor('auto', caps(['staged'], true)).flavor, 'staged');
    assert.equal(chooseFlavor('auto', caps(['n', 'staged'], false)).flavor, 'n');
    assert.equal(chooseFlavor('auto', caps(['staged'], false)).flavor, 'staged');
    assert.equal(chooseFlavor('auto', caps([], false)).flavor, 'none');
  });
  it('an asked flavour the kernel refuses falls back to none, saying why', () => {
    const c = chooseFlavor('n', caps(['staged'], true));
    assert.equal(c.flavor, 'none');
    assert.match(c.reason, /n asked.*ima_flush_htable: true/);
    assert.deepEqual(chooseFlavor('none', caps(['n'], false)), { flavor: 'none', reason: 'configured' });
  });
});

describe('Timing', () => {
  it('keeps a bounded window for percentiles and the all-time max', () => {
    const t = new Timing();
    for (let i = 1; i <= 100; i++) t.add(i);
    assert.deepEqual(t.summary(), { count: 100, p50: 51, p99: 100, max: 100 });
    t.add(1000);
    for (let i = 0; i < SAMPLE_WINDOW; i++) t.add(1);
    assert.deepEqual(t.summary(), { count: 101 + SAMPLE_WINDOW, p50: 1, p99: 1, max: 1000 });
  });
});

describe('parseCrashAt', () => {
  it('reads STEP[:N]', () => {
    assert.deepEqual(parseCrashAt('kernel-written'), { step: 'kernel-written', nth: 1 });
    assert.deepEqual(parseCrashAt('intent-journaled:3'), { step: 'intent-journaled', nth: 3 });
    assert.equal(parseCrashAt(undefined), undefined);
    assert.equal(parseCrashAt('rm -rf /'), undefined);
  });
});

describe('storedBytes', () => {
  it('is the byte offset of a record in a kernel list whose head is another stored record', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'imakeep-storedbytes-'));
    try {
      const store = await openStore(join(dir, 'store'));
      try {
        const boot = await store.beginBoot({ kernelBootId: 'x', firstSeen: 1, resetCount: 1, bankModes: { sha1: 'native' }, endianness: 'le', template: 'ima-ng', templateHash: 'sha256' });
        const recs = records(250, 3);
        const replay = new PcrReplay({ banks: { sha1: 'native' } });
        const builder = new ChunkBuilder(0, { maxBytes: 4096, maxAgeMs: 60_000 });
        for (const rec of recs) {
          replay.extend(rec);
          builder.add(rec, 0);
          if (builder.shouldSeal(0)) {
            const draft = builder.draft(replay.toState());
            await store.appendChunk(boot, draft);
            builder.committed(draft);
          }
        }
        const draft = builder.draft(replay.toState());
        await store.appendChunk(boot, draft);
        for (const [from, to] of [[0, 250], [7, 7], [13, 200], [100, 101], [249, 250]] as const) {
          assert.equal(await storedBytes(store, boot, from, to), encodeBinaryList(recs.slice(from, to)).length, `${from}..${to}`);
        }
        await assert.rejects(storedBytes(store, boot, 10, 251), RangeError);
      } finally {
        await store.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
