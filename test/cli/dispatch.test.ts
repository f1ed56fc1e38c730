/**
 * The dispatcher in `src/cli.ts` as a user meets it: `--help` prints the verb module's `usage`
 * without running the verb, and every usage error is exit 2 with ONE line on stderr
 * (`imakeep: USAGE: message (imakeep VERB --help)`). Real processes; nothing touches a store or TPM
 * because every case fails (or stops) before any I/O.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../ima/_fixtures.js';

const CLI = join(REPO_ROOT, 'dist/src/cli.js');

/** Every verb of the table in `src/cli.ts` (the first test checks the top-level usage lists exactly these). */
const VERBS = ['replay', 'convert', 'tpm', 'run', 'status', 'log', 'serve', 'export', 'verify', 'policy', 'fleet', 'enroll', 'keylime'];

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { timeout: 30_000, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('imakeep --help lists exactly the verbs tested here (exit 0)', () => {
  const r = cli(['--help']);
  assert.equal(r.status, 0);
  const listed = r.stdout
    .split('\n')
    .map((line) => /^ {2}(\S+) /.exec(line)?.[1])
    .filter((name) => name !== undefined);
  assert.deepEqual([...listed].sort(), [...VERBS].sort());
});

for (const verb of VERBS) {
  test(`imakeep ${verb} --help and -h print its usage and exit 0`, () => {
    const long = cli([verb, '--help']);
    assert.equal(long.stderr, '');
    assert.equal(long.status, 0);
    assert.ok(long.stdout.startsWith(`usage: imakeep ${verb} `), long.stdout);
    assert.ok(long.stdout.endsWith('\n') && !long.stdout.endsWith('\n\n'), 'usage ends with exactly one newline');
    // `-h` anywhere after the verb, even after other options, prints the same text.
    assert.deepEqual(cli([verb, '--json', '-h']), long);
  });
}

test('an unknown verb exits 2 with one USAGE line', () => {
  const r = cli(['frobnicate']);
  assert.equal(r.status, 2);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, "imakeep: USAGE: unknown verb 'frobnicate' (imakeep --help)\n");
  // Names of Object.prototype members are not verbs either.
  assert.equal(cli(['constructor']).stderr, "imakeep: USAGE: unknown verb 'constructor' (imakeep --help)\n");
});

test('a missing required option exits 2 with exactly one stderr line naming it', () => {
  const cases: Array<{ args: string[]; message: string }> = [
    { args: ['run', '--securityfs', '/nonexistent'], message: '--tpm and --store are required (imakeep run --help)' },
    { args: ['export', '--store', '/nonexistent'], message: '--out is required (imakeep export --help)' },
    { args: ['log'], message: '--store is required (imakeep log --help)' },
    { args: ['status', '--json'], message: '--store is required (imakeep status --help)' },
    { args: ['serve'], message: '--store is required (imakeep serve --help)' },
    { args: ['convert', '-'], message: '--to is required (imakeep convert --help)' },
    { args: ['tpm', 'quote', '--out', '/nonexistent'], message: '--nonce is required (imakeep tpm --help)' },
    { args: ['verify'], message: 'give at least one BUNDLE or LOG (imakeep verify --help)' },
  ];
  for (const { args, message } of cases) {
    const r = cli(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^imakeep: USAGE: [^\n]*\n$/, args.join(' '));
    assert.equal(r.stderr, `imakeep: USAGE: ${message}\n`);
  }
});

test('a bad option value exits 2 with one line naming the option and the value', () => {
  const cases: Array<{ args: string[]; message: string }> = [
    { args: ['export', '--store', '/x', '--out', '/x', '--max-bytes', '0'], message: "--max-bytes must be a positive integer, not '0' (imakeep export --help)" },
    { args: ['log', '--store', '/x', '--from', '0x10'], message: "--from must be a non-negative integer, not '0x10' (imakeep log --help)" },
    { args: ['log', '--store', '/x', '--format', 'xml'], message: "--format must be one of binary, ascii, not 'xml' (imakeep log --help)" },
    { args: ['tpm', 'quote', '--nonce', '00', '--out', '/x', '--pcrs', 'md5:10'], message: "PCR list 'md5:10': unknown bank 'md5' (sha1, sha256, sha384, sha512) (imakeep tpm --help)" },
    { args: ['tpm', 'quote', '--nonce', '00', '--out', '/x', '--pcrs', '10'], message: "bad PCR list '10': expected e.g. sha1:10,sha256:10 (imakeep tpm --help)" },
    { args: ['tpm', 'quote', '--nonce', '00', '--out', '/x', '--pcrs', 'sha1:x'], message: "bad PCR list 'sha1:x': expected e.g. sha1:10,sha256:10 (imakeep tpm --help)" },
    { args: ['tpm', 'bogus'], message: "unknown tpm subcommand 'bogus' (one of pcrread, quote, verify) (imakeep tpm --help)" },
  ];
  for (const { args, message } of cases) {
    const r = cli(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, `imakeep: USAGE: ${message}\n`);
  }
});

test('a reader of stdout that goes away (`convert … | head -1`): exit 0, nothing on stderr', async () => {
  const { spawn } = await import('node:child_process');
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { encodeBinaryList } = await import('../../src/ima/index.js');
  const { ImaWorkload } = await import('../../src/testing/index.js');
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-epipe-'));
  try {
    // Far more ASCII than a pipe buffer holds: the writes meet the closed pipe.
    const file = join(dir, 'binary_runtime_measurements');
    writeFileSync(file, encodeBinaryList([...new ImaWorkload({ seed: 3, template: 'mixed' }).records(20_000)]));
    const child = spawn(process.execPath, [CLI, 'convert', file, '--to', 'ascii'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const firstLine = await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString('utf8').split('\n')[0] ?? '')));
    child.stdout.destroy(); // what `head -1` does once it has its line
    const status = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    assert.match(firstLine, /^10 [0-9a-f]{40} /);
    assert.equal(stderr, '');
    assert.equal(status, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
