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
import { PcrReplay, encodeBinaryList, type ImaRecord } from '../../src/ima/index.js';
import type { KernelCapabilities } from '../../src/kernel/index.js';
import { ChunkBuilder, openStore } from '../../src/store/index.js';
import {
  SAMPLE_WINDOW,
  Timing,
  chooseFlavor,
  decideByHeadFacts,
  judgeRemoval,
  recordIdentity,
  resolveJournal,
  storedBytes,
  type RecoveryReads,
} from '../../src/collector/index.js';
import type { Journal } from '../../src/store/index.js';
import { parseCrashAt, ImaWorkload } from '../../src/testing/index.js';

function records(n: number, seed = 1): ImaRecord[] {
  return [...new ImaWorkload({ seed, template: 'mixed', violationRate: 0.05 }).records(n)];
}

describe('decideByHeadFacts: a pending n removal from the journaled head and one read of it', () => {
  const stored = records(30);
  const id = (i: number) => recordIdentity(stored[i] as ImaRecord);
  // Removal of records 10..14 (n = 5); the list held 9 records then, record 15 followed.
  const facts = { listed: 9, first: id(10), next: id(15) };
  it('head = record T: not done, however many records arrived since', () => {
    assert.equal(decideByHeadFacts(facts, stored[10], 9), false);
    assert.equal(decideByHeadFacts(facts, stored[10], 100_000), false);
  });
  it('head = the former record T+n: done, however many arrived since', () => {
    assert.equal(decideByHeadFacts(facts, stored[15], 4), true);
    assert.equal(decideByHeadFacts(facts, stored[15], 100_000), true);
  });
  it('an empty list: done', () => {
    assert.equal(decideByHeadFacts(facts, undefined, 0), true);
  });
  it('the list ended at T+n: any other head is a later arrival, done', () => {
    assert.equal(decideByHeadFacts({ ...facts, next: null }, stored[20], 50), true);
  });
  it('head is neither: undecided, kernel-diverged', () => {
    assert.deepEqual(decideByHeadFacts(facts, stored[20], 50), { reason: 'kernel-diverged', message: "the kernel's first record is neither record T nor the record that followed the removed ones" });
  });
  it('record T and record T+n the same bytes: the list shrank = done; else the facts do not decide', () => {
    const same = { listed: 9, first: id(10), next: id(10) };
    assert.equal(decideByHeadFacts(same, stored[10], 8), true);
    assert.equal(decideByHeadFacts(same, stored[10], 9), undefined);
    assert.equal(decideByHeadFacts({ ...same, next: null }, stored[10], 9), undefined);
  });
  it('identity is of the whole record: pcr, digest, template and data', () => {
    const r = stored[3] as ImaRecord;
    assert.notDeepEqual(recordIdentity({ ...r, pcr: r.pcr + 1 }), recordIdentity(r));
    assert.equal(recordIdentity(r).length, 32);
  });
});

describe('resolveJournal: the one resolution every serving path shares', () => {
  // Records 0..39 are stored; 40.. arrived in the kernel later.
  const stored = records(60);
  const storedCount = 40;
  /** Reads over a kernel list and a staged list given as arrays (no TPM: a reader without the daemon). */
  function reads(current: readonly ImaRecord[], staged: readonly ImaRecord[] = []): RecoveryReads {
    return {
      kernel: {
        stagedListLength: async () => staged.length,
        currentHead: async (max: number) => ({ count: current.length, records: current.slice(0, max), complete: current.length <= max }),
        async *currentList() {
          yield current;
        },
      },
      storedRange: async (from: number, max: number) => stored.slice(from, Math.min(from + max, storedCount)),
      replayAt: async () => new PcrReplay({ banks: { sha256: 'native' } }).toState(),
    };
  }
  const facts = (T: number, n: number, listed: number) => ({ listed, first: recordIdentity(stored[T] as ImaRecord), next: recordIdentity(stored[T + n] as ImaRecord) });
  const pendingN = (T: number, n: number, kernelHead?: ReturnType<typeof facts>): Journal => ({
    removed: T,
    pending: { flavor: 'n', removed: T, n, at: 1, ...(kernelHead === undefined ? {} : { kernelHead }) },
    staged: null,
  });
  it('n, done, records arriving: one head read decides, T moves by n, outcome journaled', async () => {
    assert.deepEqual(await resolveJournal(pendingN(10, 5, facts(10, 5, 8)), reads(stored.slice(15, 39))), {
      settled: true,
      removed: 15,
      stagedCount: null,
      action: { kind: 'outcome', done: true },
    });
  });
  it('n, not done: T stays', async () => {
    assert.deepEqual(await resolveJournal(pendingN(10, 5, facts(10, 5, 8)), reads(stored.slice(10, 39))), {
      settled: true,
      removed: 10,
      stagedCount: null,
      action: { kind: 'outcome', done: false },
    });
  });
  it('n, landed intent without facts, nothing stored past T+n and no TPM: undecided (ambiguous), never a guess', async () => {
    const r = await resolveJournal(pendingN(10, 30), reads(stored.slice(10, 50)));
    assert.equal(r.settled, false);
    assert.equal(!r.settled && r.reason, 'ambiguous');
    assert.equal(r.removed, 10);
  });
  it('staged: D happened before the outcome (no staged list, step stored): done, T + count', async () => {
    const j: Journal = { removed: 4, pending: { flavor: 'staged', removed: 4, n: 6, at: 1 }, staged: { step: 'stored', count: 6 } };
    assert.deepEqual(await resolveJournal(j, reads(stored.slice(10, 20))), { settled: true, removed: 10, stagedCount: null, action: { kind: 'outcome', done: true } });
  });
  it('staged: the list is there: staged count, or adopted; a missing or different list is undecided', async () => {
    const intent = { flavor: 'staged', removed: 4, n: 6, at: 1 } as const;
    const staged = stored.slice(4, 10);
    assert.deepEqual(await resolveJournal({ removed: 4, pending: intent, staged: { step: 'staged', count: 6 } }, reads([], staged)), { settled: true, removed: 4, stagedCount: 6, action: { kind: 'none' } });
    assert.deepEqual(await resolveJournal({ removed: 4, pending: intent, staged: null }, reads([], staged)), { settled: true, removed: 4, stagedCount: 6, action: { kind: 'adopt-staged', count: 6, journalIntent: false } });
    assert.deepEqual(await resolveJournal({ removed: 4, pending: null, staged: null }, reads([], staged)), { settled: true, removed: 4, stagedCount: 6, action: { kind: 'adopt-staged', count: 6, journalIntent: true } });
    const missing = await resolveJournal({ removed: 4, pending: intent, staged: { step: 'staged', count: 6 } }, reads(stored.slice(4, 9)));
    assert.equal(!missing.settled && missing.reason, 'staged-missing');
    const other = await resolveJournal({ removed: 4, pending: intent, staged: { step: 'staged', count: 6 } }, reads([], stored.slice(4, 9)));
    assert.equal(!other.settled && other.reason, 'staged-mismatch');
  });
});

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
