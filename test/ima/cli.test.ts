/** `imakeep replay` and `imakeep convert` as a user runs them: real processes on the fixtures. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BinaryListParser } from '../../src/ima/index.js';
import { REPO_ROOT, allCaptures } from './_fixtures.js';

const CLI = join(REPO_ROOT, 'dist/src/cli.js');
const captures = allCaptures();

function run(args: string[], input?: Uint8Array) {
  const r = spawnSync(process.execPath, [CLI, ...args], { input, timeout: 30_000, maxBuffer: 1 << 24 });
  return { status: r.status, stdout: r.stdout, text: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
}

for (const c of captures) {
  const bin = `${c.dir}/log-a/binary_runtime_measurements`;
  const ascii = `${c.dir}/log-a/ascii_runtime_measurements`;

  test(`${c.name}: replay --expect pcrs.json matches both banks natively (exit 0)`, () => {
    const r = run(['replay', bin, '--expect', `${c.dir}/pcrs.json`]);
    assert.equal(r.stderr, '');
    assert.equal(r.status, 0);
    assert.equal(
      r.text,
      [
        `records ${c.count}`,
        `sha1   native PCR-10: ${c.pcrs.sha1?.['10']}`,
        `sha256 native PCR-10: ${c.pcrs.sha256?.['10']}`,
        r.text.split('\n')[3],
        'sha1: match (native)',
        'sha256: match (native)',
        '',
      ].join('\n'),
    );
    assert.match(r.text.split('\n')[3] ?? '', /^sha256 padded PCR-10: [0-9a-f]{64}$/);
  });

  test(`${c.name}: replay of the ASCII list from stdin with evmctl-style PCR files (exit 0, JSON)`, () => {
    const r = run(
      ['replay', '-', '--format', 'ascii', '--expect', `${c.dir}/pcr-sha1.txt`, '--expect', `sha256,${c.dir}/pcr-sha256.txt`, '--json'],
      c.ascii,
    );
    assert.equal(r.status, 0, r.stderr);
    const out: unknown = JSON.parse(r.text);
    assert.deepEqual(out, {
      records: c.count,
      banks: [
        { bank: 'sha1', mode: 'native', pcrs: { 10: c.pcrs.sha1?.['10'] } },
        { bank: 'sha256', mode: 'native', pcrs: { 10: c.pcrs.sha256?.['10'] } },
        { bank: 'sha256', mode: 'padded', pcrs: { 10: (out as { banks: { pcrs: Record<string, string> }[] }).banks[2]?.pcrs['10'] } },
      ],
      expect: { sha1: { match: true, mode: 'native' }, sha256: { match: true, mode: 'native' } },
    });
  });

  test(`${c.name}: convert --to ascii is the kernel's ASCII list; ASCII → binary is the binary list`, () => {
    assert.equal(Buffer.compare(run(['convert', bin, '--to', 'ascii']).stdout, c.ascii), 0);
    assert.equal(Buffer.compare(run(['convert', ascii, '--format', 'ascii', '--to', 'binary']).stdout, c.binary), 0);
  });
}

test('replay against another capture\'s PCRs: exit 1 with IMA_REPLAY_MISMATCH on stderr', () => {
  const [a, b] = captures;
  assert.ok(a !== undefined && b !== undefined);
  const r = run(['replay', `${a.dir}/log-a/binary_runtime_measurements`, '--expect', `${b.dir}/pcrs.json`]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^imakeep: IMA_REPLAY_MISMATCH: sha1 PCR 10 after 14 records: expected [0-9a-f]{40}, replayed [0-9a-f]{40}\n$/);
  assert.match(r.text, /sha1: MISMATCH in every mode\nsha256: MISMATCH in every mode\n$/);
});

test('usage errors exit 2; a truncated list exits 1 with IMA_TRUNCATED', () => {
  const c = captures[0];
  assert.ok(c !== undefined);
  const bin = `${c.dir}/log-a/binary_runtime_measurements`;
  for (const args of [['replay'], ['replay', bin, '--format', 'xml'], ['replay', bin, '--bogus'], ['replay', '/nonexistent'], ['convert', bin], ['replay', bin, '--expect', bin]]) {
    const r = run(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^imakeep: USAGE: /);
  }
  const parser = new BinaryListParser();
  const complete = parser.push(c.binary.subarray(0, 1000)).length;
  const r = run(['replay', '-'], c.binary.subarray(0, 1000));
  assert.equal(r.status, 1);
  assert.equal(
    r.stderr,
    `imakeep: IMA_TRUNCATED: binary list ends inside a record: ${parser.bufferedBytes} bytes of an incomplete record (record ${complete}, byte offset ${parser.bytesConsumed})\n`,
  );
});

test('convert to the sha256 binary list and back; replay of the sha256 list', () => {
  const c = captures[2];
  assert.ok(c !== undefined);
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-cli-'));
  try {
    const b256 = run(['convert', `${c.dir}/log-a/binary_runtime_measurements`, '--to', 'binary', '--bank', 'sha256']);
    assert.equal(b256.status, 0, b256.stderr);
    assert.equal(b256.stdout.length, c.binary.length + 12 * c.count);
    const file = join(dir, 'binary_runtime_measurements_sha256');
    writeFileSync(file, b256.stdout);
    assert.equal(Buffer.compare(run(['convert', file, '--in-bank', 'sha256', '--to', 'binary']).stdout, c.binary), 0);
    const r = run(['replay', file, '--in-bank', 'sha256', '--expect', `${c.dir}/pcrs.json`]);
    assert.equal(r.status, 0, r.stderr);
    const ascii256 = run(['convert', file, '--in-bank', 'sha256', '--to', 'ascii', '--bank', 'sha256']).text.split('\n')[0];
    assert.match(ascii256 ?? '', /^10 [0-9a-f]{64} ima-ng sha256:[0-9a-f]{64} boot_aggregate$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('replay without --expect: chosen banks, native or --padded; convert --mode padded shows padded digests', () => {
  const c = captures[0];
  assert.ok(c !== undefined);
  const bin = `${c.dir}/log-a/binary_runtime_measurements`;
  const native = run(['replay', bin, '--bank', 'sha256', '--bank', 'sha384']);
  assert.equal(native.status, 0, native.stderr);
  const lines = native.text.split('\n');
  assert.equal(lines[0], `records ${c.count}`);
  assert.equal(lines[1], `sha256 native PCR-10: ${c.pcrs.sha256?.['10']}`);
  assert.match(lines[2] ?? '', /^sha384 native PCR-10: [0-9a-f]{96}$/);
  const padded = run(['replay', bin, '--bank', 'sha1', '--bank', 'sha256', '--padded']);
  assert.equal(padded.status, 0, padded.stderr);
  assert.equal(padded.text.split('\n')[1], `sha1   native PCR-10: ${c.pcrs.sha1?.['10']}`);
  assert.match(padded.text.split('\n')[2] ?? '', /^sha256 padded PCR-10: [0-9a-f]{64}$/);
  assert.notEqual(padded.text.split('\n')[2], native.text.split('\n')[1]);
  const first = run(['convert', bin, '--to', 'ascii', '--bank', 'sha256', '--mode', 'padded']).text.split('\n')[0] ?? '';
  const sha1Line = Buffer.from(c.ascii).toString('utf8').split('\n')[0] ?? '';
  assert.equal(first.split(' ')[1], `${sha1Line.split(' ')[1]}${'0'.repeat(24)}`);
});

test('replay --threads 2 prints what one thread prints, and fails the same way on a damaged list', () => {
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-cli-threads-'));
  try {
    for (const c of captures) {
      const bin = `${c.dir}/log-a/binary_runtime_measurements`;
      const one = run(['replay', bin, '--expect', `${c.dir}/pcrs.json`, '--threads', '0']);
      const two = run(['replay', bin, '--expect', `${c.dir}/pcrs.json`, '--threads', '2']);
      assert.equal(one.status, 0, one.stderr);
      assert.deepEqual({ status: two.status, text: two.text, stderr: two.stderr }, { status: one.status, text: one.text, stderr: one.stderr }, c.name);
    }
    const c = captures[1];
    assert.ok(c !== undefined);
    const damaged = Uint8Array.from(c.binary);
    damaged[damaged.length - 3] = (damaged[damaged.length - 3] ?? 0) ^ 0x40;
    const file = join(dir, 'damaged');
    writeFileSync(file, damaged);
    const one = run(['replay', file, '--bank', 'sha1', '--bank', 'sha256', '--threads', '1']);
    const two = run(['replay', file, '--bank', 'sha1', '--bank', 'sha256', '--threads', '2']);
    assert.equal(one.status, 1);
    assert.match(one.stderr, /^imakeep: IMA_DIGEST_MISMATCH: SHA-1 template digest [0-9a-f]{40} is not SHA-1 of the template data \(record \d+\)\n$/);
    assert.deepEqual({ status: two.status, stderr: two.stderr }, { status: one.status, stderr: one.stderr });
    assert.equal(run(['replay', file, '--threads', 'many']).status, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
