/**
 * src/kernel reader and removal: with injected faults (EBUSY storms, short reads, a partial
 * trailing record, ESTALE), and against the emulator (a list that grows while it is read, N
 * removal with rebase, the staged flavour, real EBUSY from another process).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { encodeBinaryList, encodeBinaryRecord, parseBinaryList, type ImaRecord, type ParsedRecord } from '../../src/ima/index.js';
import {
  KernelError,
  MeasurementListReader,
  deleteStaged,
  probeSecurityfs,
  readCounter,
  removeFirstRecords,
  stageAll,
  type ListBatch,
  type ListBytesBatch,
} from '../../src/kernel/index.js';
import { startSecurityfsEmulator, type SecurityfsEmulator } from '../../hw/securityfs/emulator.js';
import { FakeListFiles } from './helpers.js';
import { ImaWorkload } from '../../src/testing/index.js';

const PATH = '/fake/ima/binary_runtime_measurements_sha1';
const noWait = { random: () => 0 };

function records(n: number, seed = 3): ImaRecord[] {
  return [...new ImaWorkload({ seed, template: 'mixed', violationRate: 0.05 }).records(n)];
}

async function drainAll(reader: MeasurementListReader, maxBatchRecords?: number): Promise<ListBatch[]> {
  const out: ListBatch[] = [];
  for await (const batch of reader.drain({ maxBatchRecords })) out.push(batch);
  return out;
}

function bytesOf(recs: readonly ParsedRecord[]): Buffer {
  return Buffer.from(encodeBinaryList(recs));
}

describe('MeasurementListReader with injected faults', () => {
  it('reads in batches through short reads and resumes where it stopped', async () => {
    const recs = records(300);
    const files = new FakeListFiles(PATH, { maxRead: 97 });
    files.content = encodeBinaryList(recs.slice(0, 200));
    const reader = new MeasurementListReader({ path: PATH, files, readSize: 65536 });
    const first = await drainAll(reader, 64);
    assert.deepEqual(first.map((b) => b.records.length), [64, 64, 64, 8]);
    assert.deepEqual(reader.position, { index: 200, offset: files.content.length });
    assert.ok(bytesOf(first.flatMap((b) => b.records)).equals(Buffer.from(files.content)));
    assert.equal(files.openFds, 0, 'closed after every batch');
    files.content = encodeBinaryList(recs);
    const second = await drainAll(reader);
    assert.equal(second.length, 1);
    assert.deepEqual(second[0]?.start, { index: 200, offset: encodeBinaryList(recs.slice(0, 200)).length });
    assert.ok(bytesOf(second[0]?.records ?? []).equals(Buffer.from(encodeBinaryList(recs.slice(200)))));
  });

  it('drainBytes: each batch is the list\'s bytes in runs of whole records, through short reads and batch limits', async () => {
    const recs = records(300);
    const list = encodeBinaryList(recs);
    for (const [maxRead, readSize, max] of [[97, 65536, 64], [1 << 20, 4096, 4096], [1 << 20, 262144, 100]] as const) {
      const files = new FakeListFiles(PATH, { maxRead });
      files.content = list;
      const reader = new MeasurementListReader({ path: PATH, files, readSize });
      const batches: ListBytesBatch[] = [];
      for await (const batch of reader.drainBytes({ maxBatchRecords: max })) batches.push(batch);
      const where = `reads of ${maxRead} bytes, ${readSize}-byte buffer, ${max} records a batch`;
      assert.deepEqual(batches.map((b) => b.end.index - b.start.index), Array.from({ length: Math.ceil(300 / max) }, (_, i) => Math.min(max, 300 - i * max)), where);
      for (const b of batches) {
        const bytes = Buffer.concat(b.parts);
        assert.ok(bytes.equals(Buffer.from(list.subarray(b.start.offset, b.end.offset))), `${where}: batch ${b.start.index} is the list's bytes`);
        assert.equal(parseBinaryList(bytes).length, b.end.index - b.start.index);
        for (const part of b.parts) assert.equal(parseBinaryList(part).length > 0, true, `${where}: every part holds whole records`);
      }
      // A 256 KiB buffer takes the whole list in one read: each batch is one run of it.
      if (readSize === 262144) assert.deepEqual(batches.map((b) => b.parts.length), [1, 1, 1], `${where}: records read in place form one run`);
      assert.deepEqual(reader.position, { index: 300, offset: list.length });
    }
  });

  it('a partial trailing record is "not yet": no error, no loss', async () => {
    const recs = records(10);
    const full = encodeBinaryList(recs);
    const files = new FakeListFiles(PATH);
    files.content = full.subarray(0, full.length - 7);
    const reader = new MeasurementListReader({ path: PATH, files });
    const got = (await drainAll(reader)).flatMap((b) => b.records);
    assert.equal(got.length, 9);
    assert.equal(reader.position.index, 9);
    files.content = full;
    const rest = (await drainAll(reader)).flatMap((b) => b.records);
    assert.equal(rest.length, 1);
    assert.ok(bytesOf(rest).equals(Buffer.from(encodeBinaryRecord(recs[9] as ImaRecord))));
    assert.deepEqual(await drainAll(reader), [], 'nothing new: no batch');
  });

  it('retries EBUSY with backoff, then gives up with KERNEL_EBUSY and the attempt count', async () => {
    const files = new FakeListFiles(PATH, { busyOpens: 3 });
    files.content = encodeBinaryList(records(5));
    const reader = new MeasurementListReader({ path: PATH, files, retry: noWait });
    assert.equal((await drainAll(reader)).flatMap((b) => b.records).length, 5);
    assert.equal(files.opens, 4, '3 busy, then one batch (not full: no second open)');
    const storm = new FakeListFiles(PATH, { busyOpens: 100 });
    const r2 = new MeasurementListReader({ path: PATH, files: storm, retry: { attempts: 4, random: () => 0 } });
    await assert.rejects(drainAll(r2), (err: unknown) => {
      assert.ok(err instanceof KernelError);
      assert.equal(err.code, 'KERNEL_EBUSY');
      assert.equal(err.attempts, 4);
      assert.equal(err.path, PATH);
      assert.equal(err.syscall, 'open');
      return true;
    });
  });

  it('maps ENOENT and ESTALE (libuv UNKNOWN, errno -116) to typed errors', async () => {
    const gone = new MeasurementListReader({ path: PATH, files: new FakeListFiles(PATH, { openError: 'ENOENT' }) });
    await assert.rejects(drainAll(gone), { code: 'KERNEL_ENOENT', errno: 'ENOENT' });
    const files = new FakeListFiles(PATH);
    files.content = encodeBinaryList(records(3));
    files.write = () => {
      throw Object.assign(new Error('unknown error'), { code: 'UNKNOWN', errno: -116 });
    };
    await assert.rejects(removeFirstRecords({ path: PATH, files, decide: () => 1 }), { code: 'KERNEL_ESTALE', syscall: 'write' });
    assert.equal(files.openFds, 0, 'closed after the failed write');
  });

  it('rebase moves the position back by what was removed; never before the head', async () => {
    const recs = records(20);
    const files = new FakeListFiles(PATH);
    files.content = encodeBinaryList(recs);
    const reader = new MeasurementListReader({ path: PATH, files });
    await drainAll(reader);
    const cut = encodeBinaryList(recs.slice(0, 8)).length;
    files.content = files.content.subarray(cut);
    reader.rebase({ records: 8, bytes: cut });
    assert.deepEqual(reader.position, { index: 12, offset: files.content.length });
    assert.throws(() => reader.rebase({ records: 13, bytes: 0 }), { code: 'KERNEL_POSITION' });
  });
});

describe('removeFirstRecords with injected faults', () => {
  it('reads the head inside the window, writes "n\\n", returns bytes and hold time', async () => {
    const recs = records(50);
    const files = new FakeListFiles(PATH, { maxRead: 1000, busyOpens: 2 });
    files.content = encodeBinaryList(recs);
    const result = await removeFirstRecords({
      path: PATH,
      files,
      retry: noWait,
      decide(list) {
        const head = list.next(10);
        assert.ok(bytesOf(head).equals(Buffer.from(encodeBinaryList(recs.slice(0, 10)))));
        return 30;
      },
    });
    assert.deepEqual(files.writes, ['30\n']);
    assert.equal(result.removed, 30);
    assert.equal(result.removedBytes, encodeBinaryList(recs.slice(0, 30)).length);
    assert.equal(result.attempts, 3);
    assert.ok(result.holdMs >= 0 && result.holdMs < 1000);
    assert.equal(files.openFds, 0);
  });

  it('a decision with known bytes does not read past what decide read', async () => {
    const recs = records(40);
    const files = new FakeListFiles(PATH, { maxRead: 500 });
    files.content = encodeBinaryList(recs);
    let reads = 0;
    const read = files.read.bind(files);
    files.read = (fd, buf, len, pos) => {
      reads++;
      return read(fd, buf, len, pos);
    };
    const bytes = encodeBinaryList(recs.slice(0, 35)).length;
    const r = await removeFirstRecords({ path: PATH, files, decide: (list) => (list.next(1).length === 1 ? { n: 35, bytes } : 0) });
    assert.deepEqual([r.removed, r.removedBytes], [35, bytes]);
    assert.deepEqual(files.writes, ['35\n']);
    assert.ok(reads <= 2, `${reads} reads`);
    await assert.rejects(removeFirstRecords({ path: PATH, files, decide: () => ({ n: 1, bytes: -1 }) }), { code: 'KERNEL_EINVAL' });
  });

  it("a decision callback's own exception passes through unchanged, the fd closed", async () => {
    const files = new FakeListFiles(PATH);
    files.content = encodeBinaryList(records(3));
    const oops = new RangeError('stored records differ');
    await assert.rejects(
      removeFirstRecords({
        path: PATH,
        files,
        decide: () => {
          throw oops;
        },
      }),
      (err: unknown) => err === oops,
    );
    assert.equal(files.openFds, 0);
    assert.deepEqual(files.writes, []);
  });

  it('decision 0 writes nothing; n past the list is KERNEL_ENOENT without a write', async () => {
    const files = new FakeListFiles(PATH);
    files.content = encodeBinaryList(records(5));
    assert.equal((await removeFirstRecords({ path: PATH, files, decide: () => 0 })).removed, 0);
    await assert.rejects(removeFirstRecords({ path: PATH, files, decide: () => 6 }), { code: 'KERNEL_ENOENT' });
    assert.deepEqual(files.writes, []);
  });
});

describe('reader and removal against the emulator', () => {
  let emu: SecurityfsEmulator;
  before(async () => {
    emu = await startSecurityfsEmulator();
  });
  after(async () => {
    await emu?.stop();
  });

  it('drains a list that grows while it is read; N removal + rebase keeps global order', async () => {
    const caps = probeSecurityfs({ root: emu.securityfsRoot, cmdlinePath: '/nonexistent' });
    const workload = new ImaWorkload({ seed: 5, template: 'mixed', violationRate: 0.02 });
    await emu.append(workload.records(3000));
    const reader = new MeasurementListReader({ path: caps.binaryListPath });
    const got: ParsedRecord[] = [];
    let grown = false;
    for await (const batch of reader.drain({ maxBatchRecords: 1000 })) {
      got.push(...batch.records);
      if (!grown) {
        grown = true;
        await emu.append(workload.records(500)); // arrives while the drain is under way
      }
    }
    assert.equal(got.length, 3500);
    const removal = await removeFirstRecords({
      path: caps.binaryListPath,
      decide(list) {
        const head = list.next(100);
        assert.ok(bytesOf(head).equals(bytesOf(got.slice(0, 100))), 'head is what we read');
        return 2000;
      },
    });
    assert.equal(removal.removed, 2000);
    assert.equal(readCounter(caps.countPath), 1500);
    reader.rebase({ records: removal.removed, bytes: removal.removedBytes });
    await emu.append(workload.records(100));
    for await (const batch of reader.drain()) got.push(...batch.records);
    assert.equal(got.length, 3600);
    assert.ok(bytesOf(got).equals(readFileSync(emu.control.oracleBinary)), 'every record once, in order');
  });

  it('staged flavour: A, read the staged list, D; EEXIST; ESTALE when suspended', async () => {
    const caps = probeSecurityfs({ root: emu.securityfsRoot, cmdlinePath: '/nonexistent' });
    const stagedPath = caps.stagedBinaryListPath;
    assert.ok(stagedPath !== undefined);
    const current = readFileSync(caps.binaryListPath);
    const a = await stageAll(stagedPath);
    assert.equal(a.attempts, 1);
    await assert.rejects(stageAll(stagedPath), { code: 'KERNEL_EEXIST' });
    const staged = new MeasurementListReader({ path: stagedPath });
    const got = (await drainAll(staged)).flatMap((b) => b.records);
    assert.ok(bytesOf(got).equals(current));
    emu.setSuspended(true);
    try {
      await assert.rejects(deleteStaged(stagedPath), { code: 'KERNEL_ESTALE', errno: 'ESTALE' });
      await assert.rejects(stageAll(stagedPath), { code: 'KERNEL_EACCES' });
    } finally {
      emu.setSuspended(false);
    }
    await deleteStaged(stagedPath);
    await assert.rejects(deleteStaged(stagedPath), { code: 'KERNEL_ENOENT' });
    assert.equal(readCounter(caps.countPath), 0);
  });

  it('real EBUSY: a drain waits out a writer in another process', async () => {
    const caps = probeSecurityfs({ root: emu.securityfsRoot, cmdlinePath: '/nonexistent' });
    await emu.append(records(5, 78));
    const reader = new MeasurementListReader({ path: caps.binaryListPath, retry: { attempts: 40, baseDelayMs: 5, maxDelayMs: 40 } });
    const writer = spawn('sh', ['-c', `exec 3<> ${caps.binaryListPath}; echo held; read x`], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve) => writer.stdout.once('data', () => resolve()));
      setTimeout(() => writer.stdin.end('\n'), 60);
      const t0 = Date.now();
      const got = (await drainAll(reader)).flatMap((b) => b.records);
      assert.ok(Date.now() - t0 >= 50, 'the drain waited for the writer to go');
      assert.equal(got.length, readCounter(caps.countPath));
      assert.ok(got.length >= 5);
    } finally {
      writer.stdin.end();
      if (writer.exitCode === null) await new Promise((resolve) => writer.once('exit', resolve));
    }
  });

  it('real EBUSY: waits out a reader in another process, gives up on one that stays', async () => {
    const caps = probeSecurityfs({ root: emu.securityfsRoot, cmdlinePath: '/nonexistent' });
    await emu.append(records(10, 77));
    const holder = spawn('sh', ['-c', `exec 3< ${caps.binaryListPath}; echo held; read x`], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
      await assert.rejects(
        removeFirstRecords({ path: caps.binaryListPath, decide: () => 1, retry: { attempts: 3, baseDelayMs: 1 } }),
        { code: 'KERNEL_EBUSY', attempts: 3 },
      );
      setTimeout(() => holder.stdin.end('\n'), 50);
      const r = await removeFirstRecords({ path: caps.binaryListPath, decide: () => 1, retry: { attempts: 30, baseDelayMs: 5, maxDelayMs: 50 } });
      assert.equal(r.removed, 1);
      assert.ok(r.attempts > 1, `attempts ${r.attempts}`);
    } finally {
      holder.stdin.end();
      if (holder.exitCode === null) await new Promise((resolve) => holder.once('exit', resolve));
    }
  });
});
