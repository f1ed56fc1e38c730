/**
 * The store's behaviour, as one suite run against every backend (abstract-level's `suite({ test,
 * factory })`, as abstract-level's shared test suite is run against each implementation): `level.test.ts` runs it on real LevelDB, `memory.test.ts` on
 * memory-level.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChunkBuilder, ImaStore, StoreError, type ChunkSegments, type StoreDatabase } from '../../src/store/index.js';
import { META_KEY, chunkKey, EMPTY_JOURNAL, encodeMeta, STORE_SCHEMA_VERSION } from '../../src/testing/index.js';
import { bootInfo, checkpoint, makeRecord, replayState } from './_fixtures.js';

/**
 * How the suite gets databases: each `create()` is a fresh, unopened database; `reopen` gives the
 * same data again; with `segments`, chunk values go to those segment files (every open passes them).
 */
export interface Backend {
  readonly name: string;
  /** A new empty database and a function returning an unopened handle on the same data. */
  create(): Promise<{ db: StoreDatabase; reopen: () => StoreDatabase; cleanup: () => Promise<void>; segments?: ChunkSegments }>;
}

/** Commits records from..to-1 of `makeRecord` as chunks of `perChunk` records. */
export async function fill(store: ImaStore, boot: number, from: number, to: number, perChunk: number): Promise<void> {
  const builder = new ChunkBuilder(from);
  for (let i = from; i < to; i++) {
    builder.add(makeRecord(i), 0);
    if (builder.count === perChunk || i === to - 1) {
      const draft = builder.draft(replayState(i + 1));
      await store.appendChunk(boot, draft);
      builder.committed(draft);
    }
  }
}

/** Decoded byte strings are Buffer views; compare them as plain Uint8Arrays. */
export function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return Uint8Array.from(value);
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  return value;
}

function assertRecord(actual: { index: number; record: unknown }, index: number): void {
  assert.equal(actual.index, index);
  const expected = makeRecord(index);
  const got = actual.record as typeof expected;
  assert.equal(got.pcr, expected.pcr);
  assert.equal(got.template, expected.template);
  assert.deepEqual(Uint8Array.from(got.digest), expected.digest);
  assert.deepEqual(Uint8Array.from(got.data), expected.data);
}

async function rejectsCode(p: Promise<unknown>, code: string): Promise<StoreError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof StoreError, `expected StoreError ${code}, got ${String(e)}`);
    assert.equal(e.code, code);
    return e;
  }
  assert.fail(`expected ${code}, resolved`);
}

/** Registers the suite for `backend`. */
export function storeSuite(backend: Backend): void {
  describe(`store on ${backend.name}`, () => {
    async function withStore(body: (store: ImaStore, reopen: () => Promise<ImaStore>) => Promise<void>, now?: () => number): Promise<void> {
      const { db, reopen, cleanup, segments } = await backend.create();
      const opts = { ...(now === undefined ? {} : { now }), ...(segments === undefined ? {} : { segments }) };
      let store = await ImaStore.open(db, opts);
      try {
        await body(store, async () => {
          await store.close();
          store = await ImaStore.open(reopen(), opts);
          return store;
        });
      } finally {
        await store.close().catch(() => undefined);
        await cleanup();
      }
    }

    it('creates meta with the schema version and keeps boots in order', async () => {
      await withStore(async (store, reopen) => {
        assert.deepEqual(store.meta, { schema: STORE_SCHEMA_VERSION, akPublic: null, deviceId: null });
        assert.equal(store.currentBoot, undefined);
        assert.equal(await store.beginBoot(bootInfo(0)), 0);
        assert.equal(await store.beginBoot(bootInfo(1)), 1);
        await store.updateMeta({ deviceId: 'gw-17', akPublic: Uint8Array.of(1, 2, 3) });
        const again = await reopen();
        assert.equal(again.currentBoot, 1);
        assert.equal(again.meta.deviceId, 'gw-17');
        assert.deepEqual(Uint8Array.from(again.meta.akPublic ?? []), Uint8Array.of(1, 2, 3));
        const boots = [];
        for await (const b of again.boots()) boots.push([b.boot, b.record.kernelBootId, b.record.exported]);
        assert.deepEqual(boots, [
          [0, bootInfo(0).kernelBootId, null],
          [1, bootInfo(1).kernelBootId, null],
        ]);
        assert.deepEqual(await again.journal(1), EMPTY_JOURNAL);
        await rejectsCode(again.bootRecord(7), 'STORE_NOT_FOUND');
      });
    });

    it('chains chunks and reads records from any index across chunk boundaries', async () => {
      await withStore(async (store, reopen) => {
        const boot = await store.beginBoot(bootInfo(0));
        await fill(store, boot, 0, 250, 40);
        const again = await reopen();
        assert.equal(await again.storedCount(boot), 250);
        const chunks = [];
        for await (const c of again.chunks(boot)) chunks.push(c);
        assert.deepEqual(chunks.map((c) => c.chunk.firstIndex), [0, 40, 80, 120, 160, 200, 240]);
        assert.equal(chunks[0]?.chunk.prevHash, null);
        for (let i = 1; i < chunks.length; i++) assert.deepEqual(plain(chunks[i]?.chunk.prevHash), plain(chunks[i - 1]?.hash));
        assert.deepEqual(plain((await again.lastChunk(boot))?.hash), plain(chunks.at(-1)?.hash));
        assert.deepEqual(plain((await again.lastChunk(boot))?.chunk.replay), replayState(250));
        for (const from of [0, 1, 39, 40, 41, 239, 240, 249]) {
          const got = [];
          for await (const r of again.records(boot, from)) got.push(r);
          assert.equal(got.length, 250 - from, `from ${from}`);
          got.forEach((r, k) => assertRecord(r, from + k));
        }
        const past = [];
        for await (const r of again.records(boot, 250)) past.push(r);
        assert.deepEqual(past, []);
        const fromMiddle = [];
        for await (const c of again.chunks(boot, 119)) fromMiddle.push(c.chunk.firstIndex);
        assert.deepEqual(fromMiddle, [80, 120, 160, 200, 240]);
      });
    });

    it('rejects a chunk leaving a gap or overlapping, an empty or miscounted one, a replay state not at its end', async () => {
      await withStore(async (store) => {
        const boot = await store.beginBoot(bootInfo(0));
        await fill(store, boot, 0, 10, 10);
        const gap = new ChunkBuilder(11);
        gap.add(makeRecord(11), 0);
        const e1 = await rejectsCode(store.appendChunk(boot, gap.draft(replayState(12))), 'STORE_CHAIN_BROKEN');
        assert.deepEqual([e1.details.expectedIndex, e1.details.actualIndex], [10, 11]);
        const overlap = new ChunkBuilder(9);
        overlap.add(makeRecord(9), 0);
        const e2 = await rejectsCode(store.appendChunk(boot, overlap.draft(replayState(10))), 'STORE_CHAIN_BROKEN');
        assert.deepEqual([e2.details.expectedIndex, e2.details.actualIndex], [10, 9]);
        const ok = new ChunkBuilder(10);
        ok.add(makeRecord(10), 0);
        await rejectsCode(store.appendChunk(boot, { ...ok.draft(replayState(12)), count: 2 }), 'STORE_CORRUPT');
        const e3 = await rejectsCode(store.appendChunk(boot, ok.draft(replayState(10))), 'STORE_CHAIN_BROKEN');
        assert.deepEqual([e3.details.expectedIndex, e3.details.actualIndex], [11, 10]);
        await assert.rejects(store.appendChunk(boot, new ChunkBuilder(10).draft(replayState(10))), RangeError);
        assert.equal(await store.storedCount(boot), 10);
        await store.appendChunk(boot, ok.draft(replayState(11)));
        assert.equal(await store.storedCount(boot), 11);
      });
    });

    it('stores checkpoints, never past the stored records, and finds the last', async () => {
      await withStore(async (store, reopen) => {
        const boot = await store.beginBoot(bootInfo(0));
        assert.equal(await store.lastCheckpoint(boot), undefined);
        await fill(store, boot, 0, 300, 100);
        await store.storeCheckpoint(boot, checkpoint(120));
        await store.storeCheckpoint(boot, checkpoint(300));
        await rejectsCode(store.storeCheckpoint(boot, checkpoint(301)), 'STORE_CHAIN_BROKEN');
        const again = await reopen();
        const last = await again.lastCheckpoint(boot);
        assert.equal(last?.count, 300);
        assert.deepEqual(last?.pcrs.map((p) => [p.bank, p.pcr, Uint8Array.from(p.value)]), checkpoint(300).pcrs.map((p) => [p.bank, p.pcr, p.value]));
        const counts = [];
        for await (const c of again.checkpoints(boot, 121)) counts.push(c.count);
        assert.deepEqual(counts, [300]);
      });
    });

    it('journals intent and outcome, persisted across reopen, guarded by Invariant 1', async () => {
      await withStore(async (store, reopen) => {
        const boot = await store.beginBoot(bootInfo(0));
        await fill(store, boot, 0, 200, 100);
        const intent = { flavor: 'n', removed: 0, n: 150, at: 1000 } as const;
        const uncovered = await rejectsCode(store.journalIntent(boot, intent), 'STORE_REMOVAL_UNCOVERED');
        assert.deepEqual([uncovered.details.expectedIndex, uncovered.details.actualIndex], [0, 150]);
        await store.storeCheckpoint(boot, checkpoint(200));
        await rejectsCode(store.journalIntent(boot, { ...intent, n: 201 }), 'STORE_REMOVAL_UNCOVERED');
        await rejectsCode(store.journalIntent(boot, { ...intent, removed: 5 }), 'STORE_JOURNAL_CONFLICT');
        await rejectsCode(store.journalOutcome(boot, { done: true }), 'STORE_JOURNAL_CONFLICT');
        await store.journalIntent(boot, intent);
        await rejectsCode(store.journalIntent(boot, intent), 'STORE_JOURNAL_CONFLICT');
        let again = await reopen();
        assert.deepEqual(await again.journal(boot), { removed: 0, pending: intent, staged: null });
        assert.deepEqual(await again.journalOutcome(boot, { done: true }), { removed: 150, pending: null, staged: null });
        again = await reopen();
        assert.deepEqual(await again.journal(boot), { removed: 150, pending: null, staged: null });
        // A removal that did not happen leaves T as it was.
        await again.journalIntent(boot, { flavor: 'n', removed: 150, n: 50, at: 2000 });
        assert.deepEqual(await again.journalOutcome(boot, { done: false }), { removed: 150, pending: null, staged: null });
      });
    });

    it('journals a staged removal step by step', async () => {
      await withStore(async (store, reopen) => {
        const boot = await store.beginBoot(bootInfo(0));
        await rejectsCode(store.journalStaged(boot, { step: 'staged', count: 3 }), 'STORE_JOURNAL_CONFLICT');
        await store.journalIntent(boot, { flavor: 'staged', removed: 0, n: 0, at: 5 });
        await store.journalStaged(boot, { step: 'staged', count: 120 });
        let again = await reopen();
        assert.deepEqual(await again.journal(boot), {
          removed: 0,
          pending: { flavor: 'staged', removed: 0, n: 120, at: 5 },
          staged: { step: 'staged', count: 120 },
        });
        await rejectsCode(again.journalOutcome(boot, { done: true }), 'STORE_JOURNAL_CONFLICT');
        await fill(again, boot, 0, 120, 60);
        await rejectsCode(again.journalStaged(boot, { step: 'stored', count: 120 }), 'STORE_REMOVAL_UNCOVERED');
        await again.storeCheckpoint(boot, checkpoint(120));
        await again.journalStaged(boot, { step: 'stored', count: 120 });
        again = await reopen();
        assert.deepEqual(await again.journalOutcome(boot, { done: true }), { removed: 120, pending: null, staged: null });
      });
    });

    it('drops an old boot only when exported, acknowledged, old enough and not current', async () => {
      let clock = 1_763_800_000_000;
      await withStore(
        async (store) => {
          const old = await store.beginBoot(bootInfo(0, clock));
          await fill(store, old, 0, 100, 50);
          await store.storeCheckpoint(old, checkpoint(100));
          const opts = { exportedAck: true, olderThanMs: 86_400_000 } as const;
          await rejectsCode(store.dropBoot(old, opts), 'STORE_RETENTION_REFUSED'); // current boot
          const current = await store.beginBoot(bootInfo(1, clock));
          await rejectsCode(store.dropBoot(current, opts), 'STORE_RETENTION_REFUSED');
          await rejectsCode(store.dropBoot(old, opts), 'STORE_RETENTION_REFUSED'); // not exported
          await store.markExported(old, 60);
          await rejectsCode(store.dropBoot(old, opts), 'STORE_RETENTION_REFUSED'); // exported only in part
          await store.markExported(old, 100);
          const young = await rejectsCode(store.dropBoot(old, opts), 'STORE_RETENTION_REFUSED');
          assert.match(young.message, /younger than 86400000 ms/);
          clock += 86_400_000;
          await store.dropBoot(old, opts);
          await rejectsCode(store.bootRecord(old), 'STORE_NOT_FOUND');
          const left = [];
          for await (const b of store.boots()) left.push(b.boot);
          assert.deepEqual(left, [current]);
        },
        () => clock,
      );
    });

    it('refuses a store written by a newer schema with STORE_VERSION', async () => {
      const { db, reopen, cleanup, segments } = await backend.create();
      try {
        await db.open();
        await db.batch([{ type: 'put', key: META_KEY, value: encodeMeta({ schema: STORE_SCHEMA_VERSION + 1, akPublic: null, deviceId: null }) }], { sync: true });
        await db.close();
        const e = await rejectsCode(ImaStore.open(reopen(), { segments }), 'STORE_VERSION');
        const newer = STORE_SCHEMA_VERSION + 1;
        assert.deepEqual([e.details.foundVersion, e.details.supportedVersion], [newer, STORE_SCHEMA_VERSION]);
        assert.match(e.message, new RegExp(`version ${newer}.*up to version ${STORE_SCHEMA_VERSION}`));
      } finally {
        await cleanup();
      }
    });

    it('reports corrupt values with STORE_CORRUPT naming the key', async () => {
      const { db, reopen, cleanup, segments } = await backend.create();
      /** Cuts the last 3 bytes off the value stored under `key`. */
      const truncate = async (key: Uint8Array): Promise<void> => {
        const raw = reopen();
        await raw.open();
        const value = (await raw.get(key)) ?? assert.fail('no value');
        await raw.batch([{ type: 'put', key, value: value.subarray(0, value.length - 3) }], { sync: true });
        await raw.close();
      };
      try {
        const store = await ImaStore.open(db, { segments });
        const boot = await store.beginBoot(bootInfo(0));
        await fill(store, boot, 0, 20, 10);
        await store.close();
        await truncate(chunkKey(boot, 0));
        const again = await ImaStore.open(reopen(), { segments });
        try {
          const e = await rejectsCode(
            (async () => {
              for await (const r of again.records(boot)) void r;
            })(),
            'STORE_CORRUPT',
          );
          assert.equal(e.details.key, 'chunk/0/0');
        } finally {
          await again.close();
        }
        // The last chunk is read at open (it holds the chain head): a corrupt one stops the open.
        await truncate(chunkKey(boot, 10));
        const e = await rejectsCode(ImaStore.open(reopen(), { segments }), 'STORE_CORRUPT');
        assert.equal(e.details.key, 'chunk/0/10');
      } finally {
        await cleanup();
      }
    });

    it('a failed write whose reopen fails too: reads throw STORE_WRITE_FAILED, then reopen by themselves', async () => {
      const { db, cleanup, segments } = await backend.create();
      let diskFull = false;
      const enospc = (): Error => Object.assign(new Error('IO error: 000003.log: No space left on device'), { code: 'LEVEL_IO_ERROR' });
      const faulty: StoreDatabase = {
        open: async () => {
          if (diskFull) throw Object.assign(new Error('Database failed to open'), { code: 'LEVEL_DATABASE_NOT_OPEN', cause: enospc() });
          return db.open();
        },
        close: () => db.close(),
        get: (k) => db.get(k),
        iterator: (o) => db.iterator(o),
        clear: (o) => db.clear(o),
        batch: async (ops, o) => {
          if (diskFull) throw enospc();
          return db.batch(ops, o);
        },
      };
      const store = await ImaStore.open(faulty, { segments });
      try {
        const boot = await store.beginBoot(bootInfo(0));
        await fill(store, boot, 0, 20, 10);
        diskFull = true;
        await rejectsCode(store.journalIntent(boot, { flavor: 'staged', removed: 0, n: 0, at: 1 }), 'STORE_WRITE_FAILED');
        // The next write reopens first, and the reopen fails: the database is closed now.
        await rejectsCode(store.journalIntent(boot, { flavor: 'staged', removed: 0, n: 0, at: 1 }), 'STORE_WRITE_FAILED');
        const e = await rejectsCode(store.journal(boot), 'STORE_WRITE_FAILED');
        assert.match(String(e.message), /cannot reopen the store after a failed write/);
        await rejectsCode(store.lastCheckpoint(boot), 'STORE_WRITE_FAILED');
        await rejectsCode((async () => {
          for await (const r of store.records(boot, 0)) return r;
          return undefined;
        })(), 'STORE_WRITE_FAILED');
        // Space is back: a read (no write needed) reopens and sees what was stored.
        diskFull = false;
        assert.deepEqual(await store.journal(boot), EMPTY_JOURNAL);
        const got: number[] = [];
        for await (const r of store.records(boot, 18)) got.push(r.index);
        assert.deepEqual(got, [18, 19]);
      } finally {
        await store.close();
        await cleanup();
      }
    });

    it('leaves state unchanged when a write fails, and resumes on retry', async () => {
      const { db, cleanup, segments } = await backend.create();
      let failures = 0;
      const faulty: StoreDatabase = {
        open: () => db.open(),
        close: () => db.close(),
        get: (k) => db.get(k),
        iterator: (o) => db.iterator(o),
        clear: (o) => db.clear(o),
        batch: async (ops, o) => {
          if (failures > 0) {
            failures--;
            throw Object.assign(new Error('IO error: 000003.log: No space left on device'), { code: 'LEVEL_IO_ERROR' });
          }
          return db.batch(ops, o);
        },
      };
      const store = await ImaStore.open(faulty, { segments });
      try {
        const boot = await store.beginBoot(bootInfo(0));
        await fill(store, boot, 0, 20, 20);
        const builder = new ChunkBuilder(20);
        builder.add(makeRecord(20), 0);
        const draft = builder.draft(replayState(21));
        failures = 1;
        const e = await rejectsCode(store.appendChunk(boot, draft), 'STORE_WRITE_FAILED');
        assert.match(String((e.cause as Error).message), /No space left/);
        assert.equal(await store.storedCount(boot), 20);
        assert.equal(builder.count, 1);
        failures = 1;
        await rejectsCode(store.journalIntent(boot, { flavor: 'staged', removed: 0, n: 0, at: 1 }), 'STORE_WRITE_FAILED');
        assert.deepEqual(await store.journal(boot), EMPTY_JOURNAL);
        await store.appendChunk(boot, draft);
        builder.committed(draft);
        assert.equal(await store.storedCount(boot), 21);
        assert.equal(builder.count, 0);
        const got = [];
        for await (const r of store.records(boot, 19)) got.push(r.index);
        assert.deepEqual(got, [19, 20]);
      } finally {
        await store.close();
        await cleanup();
      }
    });
  });
}
