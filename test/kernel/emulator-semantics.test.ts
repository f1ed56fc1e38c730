/**
 * The securityfs emulator against docs/kernel.md#files-in-securityfs, #staging-requests, #the-writer-lock, #counters, #reboot-and-kexec: layout and modes,
 * every request row with its exact errno, the one-writer-or-many-readers lock across all list
 * files (processes, threads), counters, suspend, kmem. Plain fs calls and a shell.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, lstatSync, openSync, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { encodeBinaryList, parseBinaryList, type ImaRecord } from '../../src/ima/index.js';
import { recordKmem } from '../../src/kernel/index.js';
import { startSecurityfsEmulator, type SecurityfsEmulator } from '../../hw/securityfs/emulator.js';
import { errnoOf, sh, writeRequest } from './helpers.js';
import { ImaWorkload } from '../../src/testing/index.js';

const LIST = 'binary_runtime_measurements_sha1';

function records(n: number, seed = 7): ImaRecord[] {
  return [...new ImaWorkload({ seed, template: 'ima-ng', violationRate: 0.1 }).records(n)];
}

describe('securityfs emulator: 7.2 semantics', () => {
  let emu: SecurityfsEmulator;
  let ima: string;
  const f = (name: string) => `${ima}/${name}`;
  const count = () => readFileSync(f('runtime_measurements_count'), 'latin1');

  before(async () => {
    emu = await startSecurityfsEmulator({ banks: ['sha1', 'sha256'] });
    ima = `${emu.securityfsRoot}/ima`;
  });
  after(async () => {
    await emu?.stop();
  });

  it('shows the 7.2 files with their modes and symlinks (docs/kernel.md#files-in-securityfs)', () => {
    const names = readdirSync(ima).sort();
    assert.deepEqual(names, [
      'ascii_runtime_measurements',
      'ascii_runtime_measurements_sha1',
      'ascii_runtime_measurements_sha1_staged',
      'ascii_runtime_measurements_sha256',
      'ascii_runtime_measurements_sha256_staged',
      'ascii_runtime_measurements_staged',
      'binary_runtime_measurements',
      'binary_runtime_measurements_sha1',
      'binary_runtime_measurements_sha1_staged',
      'binary_runtime_measurements_sha256',
      'binary_runtime_measurements_sha256_staged',
      'binary_runtime_measurements_staged',
      'runtime_measurements_count',
      'violations',
    ]);
    assert.equal(statSync(f(LIST)).mode & 0o7777, 0o660);
    assert.equal(statSync(f('ascii_runtime_measurements_sha256_staged')).mode & 0o7777, 0o660);
    assert.equal(statSync(f('runtime_measurements_count')).mode & 0o7777, 0o440);
    assert.equal(statSync(f('violations')).mode & 0o7777, 0o440);
    assert.equal(readlinkSync(f('binary_runtime_measurements')), 'binary_runtime_measurements_sha1');
    assert.equal(readlinkSync(f('ascii_runtime_measurements_staged')), 'ascii_runtime_measurements_sha1_staged');
    assert.equal(readlinkSync(`${emu.securityfsRoot}/ima`), 'integrity/ima');
    assert.ok(lstatSync(f('binary_runtime_measurements')).isSymbolicLink());
    assert.equal(count(), '0\n');
  });

  it('rejects malformed requests with EINVAL / ERANGE (docs/kernel.md#errno-semantics)', async () => {
    await emu.append(records(5));
    const orig = f(LIST);
    const staged = f('binary_runtime_measurements_sha1_staged');
    assert.equal(writeRequest(orig, '\n'), 'EINVAL', 'datalen < 2');
    assert.equal(writeRequest(orig, `${'1'.repeat(21)}\n`), 'EINVAL', 'datalen > 21');
    assert.equal(writeRequest(orig, '12'), 'EINVAL', 'no trailing newline');
    assert.equal(writeRequest(orig, 'A\n'), 'EINVAL', 'A on an original file');
    assert.equal(writeRequest(orig, 'D\n'), 'EINVAL', 'D on an original file');
    assert.equal(writeRequest(staged, 'AA\n'), 'EINVAL', 'A with datalen != 2');
    assert.equal(writeRequest(staged, 'DD\n'), 'EINVAL', 'D with datalen != 2');
    assert.equal(writeRequest(staged, '1\n'), 'EINVAL', 'N on a staged file');
    assert.equal(writeRequest(orig, '0\n'), 'EINVAL', 'N == 0');
    assert.equal(writeRequest(orig, '1x\n'), 'EINVAL', 'bad digits');
    assert.equal(writeRequest(orig, '-1\n'), 'EINVAL', 'sign');
    assert.equal(writeRequest(orig, ' 1\n'), 'EINVAL', 'leading space');
    assert.equal(writeRequest(orig, '18446744073709551616\n'), 'ERANGE', 'ULONG_MAX + 1');
    assert.equal(writeRequest(orig, '18446744073709551615\n'), 'ENOENT', 'ULONG_MAX > records');
    assert.equal(writeRequest(orig, '6\n'), 'ENOENT', 'N > records');
    assert.equal(writeRequest(f('runtime_measurements_count'), '1\n'), 'EINVAL', 'counter has no write method');
    assert.equal(count(), '5\n', 'nothing removed by refused requests');
  });

  it('N removes the first records; count drops by N; returns datalen (docs/kernel.md#staging-requests, #counters)', async () => {
    const before = emu.stats();
    assert.equal(writeRequest(f(LIST), '+2\n'), 'ok 3', 'kstrtoul accepts a leading +');
    assert.equal(count(), `${before.recordsCurrent - 2}\n`);
    const oracle = readFileSync(emu.control.oracleBinary);
    const current = readFileSync(f(LIST));
    assert.ok(oracle.subarray(oracle.length - current.length).equals(current), 'current list = oracle tail');
    assert.equal(emu.stats().recordsDeleted, before.recordsDeleted + 2);
  });

  it('A stages all, D deletes; EEXIST, ENOENT; counters follow (docs/kernel.md#errno-semantics, #counters)', async () => {
    const staged = f('binary_runtime_measurements_sha1_staged');
    const currentBefore = readFileSync(f(LIST));
    const violations = readFileSync(f('violations'), 'latin1');
    assert.equal(writeRequest(staged, 'A\n'), 'ok 2');
    assert.equal(count(), '0\n', 'count shows the current list only');
    assert.ok(readFileSync(staged).equals(currentBefore), 'staged list = the former current list');
    assert.equal(readFileSync(f(LIST)).length, 0);
    assert.equal(writeRequest(staged, 'A\n'), 'EEXIST', 'staged list not empty');
    await emu.append(records(3, 9));
    assert.equal(count(), '3\n');
    assert.equal(writeRequest(f('ascii_runtime_measurements_sha256_staged'), 'A\n'), 'EEXIST', 'any staged file, any bank');
    assert.equal(writeRequest(f(LIST), '1\n'), 'ok 2', 'N works on the current list while a staged list exists');
    assert.ok(readFileSync(staged).equals(currentBefore), 'N never touches the staged list');
    assert.equal(writeRequest(staged, 'D\n'), 'ok 2');
    assert.equal(readFileSync(staged).length, 0);
    assert.equal(writeRequest(staged, 'D\n'), 'ENOENT', 'nothing staged');
    assert.equal(count(), '2\n');
    assert.equal(readFileSync(f('violations'), 'latin1'), violations, 'violations untouched by staging');
    assert.equal(writeRequest(f(LIST), '2\n'), 'ok 2');
    assert.equal(writeRequest(staged, 'A\n'), 'ENOENT', 'current list empty');
  });

  it('after suspend: A -> EACCES, D and N -> ESTALE, appends refused (docs/kernel.md#errno-semantics, #reboot-and-kexec)', async () => {
    await emu.append(records(4, 11));
    const staged = f('binary_runtime_measurements_sha1_staged');
    assert.equal(writeRequest(staged, 'A\n'), 'ok 2');
    await emu.append(records(2, 12));
    emu.setSuspended(true);
    try {
      assert.equal(writeRequest(staged, 'A\n'), 'EACCES');
      assert.equal(writeRequest(staged, 'D\n'), 'ESTALE');
      assert.equal(writeRequest(f(LIST), '1\n'), 'ESTALE');
      await assert.rejects(emu.append(records(1, 13)), { code: 'EMULATOR_SUSPENDED' });
    } finally {
      emu.setSuspended(false);
    }
    assert.equal(writeRequest(staged, 'D\n'), 'ok 2');
    assert.equal(writeRequest(f(LIST), '2\n'), 'ok 2');
  });

  it('one writer or many readers across all list files (docs/kernel.md#the-writer-lock)', () => {
    const a = openSync(f(LIST), 'r');
    const b = openSync(f('ascii_runtime_measurements_sha256_staged'), 'r');
    assert.equal(errnoOf(() => openSync(f('binary_runtime_measurements_sha256'), 'r+')), 'EBUSY', 'writer while readers');
    closeSync(a);
    closeSync(b);
    const w = openSync(f('ascii_runtime_measurements_sha256_staged'), 'r+');
    try {
      assert.equal(errnoOf(() => openSync(f(LIST), 'r')), 'EBUSY', 'reader while a writer, even the same thread');
      const w2 = openSync(f(LIST), 'r+');
      const w3 = openSync(f('binary_runtime_measurements_sha1_staged'), 'w');
      assert.equal(emu.stats().measureUsers, -1);
      closeSync(w3);
      closeSync(w2);
      assert.equal(errnoOf(() => openSync(f(LIST), 'r')), 'EBUSY', 'still the writer after its extra opens closed');
    } finally {
      closeSync(w);
    }
    const r = openSync(f(LIST), 'r');
    closeSync(r);
    assert.equal(emu.stats().measureUsers, 0);
    assert.equal(readFileSync(f('runtime_measurements_count'), 'latin1').length > 0, true, 'counters take no lock');
  });

  it('the writer exemption is per thread: a worker thread gets EBUSY (docs/kernel.md#the-writer-lock)', async () => {
    const w = openSync(f(LIST), 'r+');
    try {
      const code = `
        const { openSync, closeSync } = require('node:fs');
        const { parentPort, workerData } = require('node:worker_threads');
        let result = 'ok';
        try { closeSync(openSync(workerData, 'r+')); } catch (e) { result = e.code; }
        parentPort.postMessage(result);`;
      const worker = new Worker(code, { eval: true, workerData: f(LIST) });
      const result = await new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      await worker.terminate();
      assert.equal(result, 'EBUSY');
    } finally {
      closeSync(w);
    }
  });

  it('readers and a writer in separate processes (docs/kernel.md#the-writer-lock)', async () => {
    const reader = spawn('sh', ['-c', `exec 3< ${f('ascii_runtime_measurements')}; echo held; read x`], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve) => reader.stdout.once('data', () => resolve()));
      assert.equal(writeRequest(f(LIST), '1\n'), 'EBUSY');
      assert.equal(errnoOf(() => closeSync(openSync(f(LIST), 'r'))), 'ok', 'a second reader');
      const shell = sh(`echo 1 > ${f(LIST)}`);
      assert.notEqual(shell.status, 0);
      assert.match(shell.stderr, /Device or resource busy/);
    } finally {
      reader.stdin.end('\n');
      await new Promise((resolve) => reader.once('exit', resolve));
    }
    await emu.append(records(2, 21));
    const shell = sh(`echo 1 > ${f(LIST)} && cat ${f('runtime_measurements_count')}`);
    assert.equal(shell.status, 0, shell.stderr);
    assert.equal(shell.stdout, '1\n');
  });

  it('the documented shell workflow and its error messages (docs/kernel.md#staging-requests)', async () => {
    await emu.append(records(4, 81));
    const staged = f('binary_runtime_measurements_staged');
    const bash = (script: string) => sh(script, [], 'bash');
    const ok = bash(`echo A > ${staged} && cat ${staged} | wc -c && cat ${f('runtime_measurements_count')}`);
    assert.equal(ok.status, 0, ok.stderr);
    const [stagedBytes, countAfterA] = ok.stdout.trim().split('\n');
    assert.ok(Number(stagedBytes) > 0);
    assert.equal(countAfterA, '0');
    assert.match(bash(`echo A > ${staged}`).stderr, /File exists/);
    assert.match(bash(`echo 0 > ${f(LIST)}`).stderr, /Invalid argument/);
    assert.match(bash(`echo 99999999999999999999 > ${f(LIST)}`).stderr, /Numerical result out of range/);
    assert.equal(bash(`echo D > ${staged}`).status, 0);
    assert.match(bash(`echo D > ${staged}`).stderr, /No such file or directory/);
    await emu.append(records(2, 82));
    assert.equal(bash(`echo A > ${staged}`).status, 0);
    assert.equal(bash(`echo 1 > ${emu.control.suspend}`).status, 0);
    assert.match(bash(`echo D > ${staged}`).stderr, /Stale file handle/);
    assert.match(bash(`echo 1 > ${f(LIST)}`).stderr, /Stale file handle/);
    assert.match(bash(`echo A > ${staged}`).stderr, /Permission denied/);
    assert.equal(sh(`echo 0 > ${emu.control.suspend} && echo D > ${staged}`).status, 0);
  });

  it('a writer killed with SIGKILL releases the lock (the kernel closes its files)', async () => {
    const writer = spawn('sh', ['-c', `exec 3<> ${f(LIST)}; echo held; exec sleep 30`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => writer.stdout.once('data', () => resolve()));
    assert.equal(errnoOf(() => closeSync(openSync(f(LIST), 'r'))), 'EBUSY');
    const exited = new Promise((resolve) => writer.once('exit', resolve));
    writer.kill('SIGKILL');
    await exited;
    let result = 'EBUSY';
    for (let i = 0; i < 100 && result === 'EBUSY'; i++) {
      result = errnoOf(() => closeSync(openSync(f(LIST), 'r')));
      if (result === 'EBUSY') await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(result, 'ok');
  });

  it('a write open without CAP_SYS_ADMIN is EPERM; a reader is fine (docs/kernel.md#the-writer-lock)', () => {
    const drop = ['--inh-caps=-sys_admin', '--bounding-set=-sys_admin'];
    const w = sh(`echo 1 > ${f(LIST)}`, drop);
    assert.notEqual(w.status, 0);
    assert.match(w.stderr, /Operation not permitted/);
    const r = sh(`cat ${f(LIST)} | wc -c`, drop);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(Number(r.stdout.trim()), readFileSync(f(LIST)).length);
    const nobody = sh(`cat ${f(LIST)}`, ['--reuid=65534', '--regid=65534', '--clear-groups']);
    assert.notEqual(nobody.status, 0);
    assert.match(nobody.stderr, /Permission denied/, 'mode 0660 root:root: EACCES before the open method');
  });

  it('shell tools see the kernel formats; a read returns at most one seq_file page (docs/kernel.md#reading-the-list)', async () => {
    const recs = records(200, 31);
    await emu.append(recs);
    const shell = sh(`dd if=${f(LIST)} bs=65536 count=1 2>/dev/null | wc -c; cat ${f('binary_runtime_measurements')} | wc -c`);
    assert.equal(shell.status, 0, shell.stderr);
    const [one, all] = shell.stdout.trim().split('\n').map(Number);
    const tail = readFileSync(f(LIST));
    // One read: the whole records that fit one 4 KiB seq_file buffer, from the list's start.
    let page = 0;
    for (const rec of parseBinaryList(tail)) {
      const next = page + encodeBinaryList([rec]).length;
      if (next > 4096) break;
      page = next;
    }
    assert.ok(page > 0);
    assert.equal(one, page, 'one 64 KiB read returns one page of whole records');
    assert.equal(all, tail.length, 'cat through the legacy symlink reads the whole list');
    assert.ok(tail.subarray(tail.length - encodeBinaryList(recs).length).equals(Buffer.from(encodeBinaryList(recs))));
  });

});

describe('securityfs emulator: kernel memory', () => {
  it('kmem: N frees template data only; the entries stay (docs/kernel.md#what-removal-frees)', async () => {
    // Its own emulator: the figures below depend on nothing another test did.
    const emu = await startSecurityfsEmulator({ banks: ['sha1', 'sha256'] });
    try {
      const list = `${emu.securityfsRoot}/ima/${LIST}`;
      const recs = records(30, 41);
      await emu.append(recs);
      const dataOf = (rs: readonly ImaRecord[]): number => rs.reduce((s, r) => s + recordKmem(r, 1).data, 0);
      const entriesOf = (rs: readonly ImaRecord[]): number => rs.reduce((s, r) => s + recordKmem(r, 2).entry, 0); // no TPM: the sha1 and sha256 slots
      const k0 = emu.kmemBytes();
      assert.equal(k0, 8192 + dataOf(recs) + entriesOf(recs), 'hash table + every record');
      assert.equal(writeRequest(list, '20\n'), 'ok 3');
      const k1 = emu.kmemBytes();
      assert.equal(k0 - k1, dataOf(recs.slice(0, 20)), 'the first 20 records\' data, nothing else');
      assert.equal(writeRequest(list, '10\n'), 'ok 3');
      assert.equal(k1 - emu.kmemBytes(), dataOf(recs.slice(20)));
      assert.equal(emu.kmemBytes(), 8192 + entriesOf(recs), 'the entries of all 30 stay');
    } finally {
      await emu.stop();
    }
  });
});

describe('securityfs emulator: ima_flush_htable and CONFIG_IMA_STAGING=n', () => {
  it('N is refused with EINVAL; D frees whole records (docs/kernel.md#what-removal-frees)', async () => {
    const emu = await startSecurityfsEmulator({ flushHtable: true });
    try {
      const ima = `${emu.securityfsRoot}/ima`;
      await emu.append(records(20, 51));
      assert.equal(writeRequest(`${ima}/${LIST}`, '1\n'), 'EINVAL');
      assert.equal(writeRequest(`${ima}/binary_runtime_measurements_staged`, 'A\n'), 'ok 2');
      assert.equal(writeRequest(`${ima}/binary_runtime_measurements_staged`, 'D\n'), 'ok 2');
      assert.equal(emu.kmemBytes(), 8192, 'only the (new) hash table is left');
    } finally {
      await emu.stop();
    }
  });

  it('without staging: no _staged files, N still works (docs/kernel.md#feature-detection)', async () => {
    const emu = await startSecurityfsEmulator({ staging: false });
    try {
      const ima = `${emu.securityfsRoot}/ima`;
      assert.equal(readdirSync(ima).some((n) => n.includes('staged')), false);
      await emu.append(records(3, 61));
      assert.equal(writeRequest(`${ima}/binary_runtime_measurements`, '3\n'), 'ok 2');
      assert.equal(readFileSync(`${ima}/runtime_measurements_count`, 'latin1'), '0\n');
    } finally {
      await emu.stop();
    }
  });
});
