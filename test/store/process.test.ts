/**
 * The store against the real world: another process holding the lock, a process killed after a
 * journal write, a full filesystem (tmpfs), and the memory of reading a long boot.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { after, describe, it } from 'node:test';
import { ChunkBuilder, StoreError, openStore, type ImaStore } from '../../src/store/index.js';
import { bootInfo, makeRecord, replayState } from './_fixtures.js';
import { fill } from './suite.js';

const CHILD = new URL('./_child.js', import.meta.url).pathname;

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'imakeep-store-'));
  after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Starts the child and waits for its first line; killed in `after` whatever happens. */
async function child(dir: string, mode: string): Promise<ChildProcess> {
  const proc = spawn(process.execPath, [CHILD, dir, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  after(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const stdout = proc.stdout ?? assert.fail('no stdout');
  const [line] = (await once(stdout, 'data')) as [Buffer];
  assert.equal(line.toString().trim(), mode === 'intent' ? 'intent' : 'open');
  return proc;
}

async function storeError(p: Promise<unknown>): Promise<StoreError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof StoreError, String(e));
    return e;
  }
  return assert.fail('resolved');
}

describe('store across processes', () => {
  it('a second process gets STORE_LOCKED with LEVEL_LOCKED as the cause of the cause', async () => {
    const dir = await tempDir();
    const holder = await child(dir, 'hold');
    const e = await storeError(openStore(dir));
    assert.equal(e.code, 'STORE_LOCKED');
    const cause = e.cause as { code: string; cause: { code: string } };
    assert.deepEqual([cause.code, cause.cause.code], ['LEVEL_DATABASE_NOT_OPEN', 'LEVEL_LOCKED']);
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const store = await openStore(dir); // lock released with the process
    await store.close();
  });

  it('a journaled intent survives SIGKILL of the writer', async () => {
    const dir = await tempDir();
    const writer = await child(dir, 'intent');
    writer.kill('SIGKILL');
    await once(writer, 'exit');
    const store = await openStore(dir);
    try {
      assert.equal(store.currentBoot, 0);
      assert.deepEqual(await store.journal(0), { removed: 0, pending: { flavor: 'n', removed: 0, n: 10, at: 42 }, staged: null });
      assert.equal(await store.storedCount(0), 10);
    } finally {
      await store.close();
    }
  });
});

describe('store on a full filesystem (2 MiB tmpfs)', { skip: process.getuid?.() !== 0 ? 'needs root to mount tmpfs' : false }, () => {
  it('fails with STORE_WRITE_FAILED, keeps its state, resumes when space returns, loses nothing', async () => {
    const mnt = await mkdtemp(join(tmpdir(), 'imakeep-tmpfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt]);
    after(async () => {
      execFileSync('umount', [mnt]);
      await rm(mnt, { recursive: true, force: true });
    });
    const dir = join(mnt, 'db');
    await mkdir(dir);
    await writeFile(join(mnt, 'filler'), new Uint8Array(1200 * 1024));
    let store: ImaStore = await openStore(dir);
    try {
      const boot = await store.beginBoot(bootInfo(0));
      const builder = new ChunkBuilder(0);
      /** Seals the open chunk; the StoreError if the commit failed. */
      const seal = async (): Promise<StoreError | undefined> => {
        const draft = builder.draft(replayState(builder.nextIndex));
        try {
          await store.appendChunk(boot, draft);
          builder.committed(draft);
          return undefined;
        } catch (e) {
          assert.ok(e instanceof StoreError, String(e));
          return e;
        }
      };
      let failure: StoreError | undefined;
      for (let i = 0; failure === undefined; i++) {
        builder.add(makeRecord(i), 0);
        if (builder.byteLength >= 64 * 1024) failure = await seal();
      }
      assert.equal(failure.code, 'STORE_WRITE_FAILED');
      // The segment append fails first (node: "ENOSPC: no space left on device, write"; LevelDB says "No space left on device").
      assert.match(String((failure.cause as Error).message), /no space left on device/i);
      const stored = await store.storedCount(boot);
      assert.ok(stored > 0);
      assert.equal(stored, builder.firstIndex, 'in-memory count unchanged by the failed write');
      // Still full: the retry fails the same way (the store first reopens LevelDB, which needs space too).
      assert.equal((await seal())?.code, 'STORE_WRITE_FAILED');
      assert.equal(await store.storedCount(boot), stored);
      // Space returns: the same store instance resumes.
      await unlink(join(mnt, 'filler'));
      assert.equal(await seal(), undefined);
      const resumed = builder.firstIndex;
      assert.ok(resumed > stored);
      // After a reopen every committed record is there, in order, and nothing else (LevelDB drops
      // writes appended behind a torn log record: the store reopened before retrying, so none is lost).
      await store.close();
      store = await openStore(dir);
      assert.equal(await store.storedCount(boot), resumed);
      let n = 0;
      for await (const r of store.records(boot)) assert.equal(r.index, n++);
      assert.equal(n, resumed);
    } finally {
      await store.close();
    }
  });
});

describe('store memory', () => {
  it('iterating 200k stored records keeps the heap bounded', async (t) => {
    const dir = await tempDir();
    const store = await openStore(dir);
    try {
      const boot = await store.beginBoot(bootInfo(0));
      await fill(store, boot, 0, 200_000, 400);
      // Live heap, not garbage: collect before each sample.
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('gc') as () => void;
      gc();
      const before = process.memoryUsage().heapUsed;
      let peak = before;
      let n = 0;
      for await (const r of store.records(boot)) {
        if (r.index !== n++) assert.fail(`index ${r.index} at ${n - 1}`);
        if (n % 10_000 === 0) {
          gc();
          peak = Math.max(peak, process.memoryUsage().heapUsed);
        }
      }
      assert.equal(n, 200_000);
      const growth = peak - before;
      t.diagnostic(`heapUsed growth while iterating 200k records (~31 MB of records): ${(growth / 1048576).toFixed(1)} MiB`);
      // The records alone are ~31 MB; holding them would show. One chunk is ~64 KiB (400 records).
      assert.ok(growth < 4 * 1024 * 1024, `heap grew ${growth} bytes`);
    } finally {
      await store.close();
    }
  });
});
