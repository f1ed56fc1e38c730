/**
 * The README's sim workflow, as written: the sim (`npm run sim -- OPTIONS`, hw/sim.ts) prints a shared TPM address and a TCTI;
 * `imakeep run --tpm <printed>` cycles against the emulator while the sim keeps its own TPM
 * connection, and `tpm2_pcrread -T <printed TCTI> sha256:10` prints the PCR 10 our client reads.
 */
import { after, before, describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';
import { toHex } from '../../src/ima/index.js';
import { Tpm } from '../../src/tpm/index.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const SIM = fileURLToPath(new URL('../../hw/sim.js', import.meta.url));
const RECORDS = 40;

/** Lines `sim` printed, until one matches `done`. */
function linesUntil(child: ChildProcess, done: RegExp): Promise<string[]> {
  const stdout = child.stdout;
  assert.ok(stdout !== null);
  const lines: string[] = [];
  const reader = createInterface({ input: stdout });
  return new Promise((resolve, reject) => {
    reader.on('line', (line) => {
      lines.push(line);
      if (done.test(line)) resolve(lines);
    });
    child.once('exit', (code) => reject(new Error(`sim exited (${String(code)}) after:\n${lines.join('\n')}`)));
  });
}

function field(lines: readonly string[], pattern: RegExp): string {
  const value = lines.map((l) => pattern.exec(l)?.[1]).find((v) => v !== undefined);
  assert.ok(value !== undefined, `${String(pattern)} not in:\n${lines.join('\n')}`);
  return value;
}

describe('the sim, then imakeep run and tpm2-tools on the printed addresses', () => {
  let swtpm: SwtpmInstance;
  let sim: ChildProcess;
  let work: string;
  let printed: string[];

  before(async () => {
    swtpm = await startSwtpm({ banks: ['sha1', 'sha256'] });
    work = mkdtempSync(join(tmpdir(), 'imakeep-sim-test-'));
    sim = spawn(process.execPath, [SIM, '--mount', join(work, 'mnt'), '--tpm', swtpm.address, '--rate', '0', '--count', String(RECORDS)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    printed = await linesUntil(sim, /running until SIGINT/);
  });

  after(async () => {
    if (sim !== undefined && sim.exitCode === null) {
      const exited = new Promise((resolve) => sim.once('exit', resolve));
      sim.kill('SIGTERM');
      await exited;
    }
    await swtpm?.stop();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  it('run --tpm <printed> cycles; the stored log is the emulated kernel\'s; tpm2_pcrread reads our PCR 10', async () => {
    const address = field(printed, /^shared TPM\s+--tpm (swtpm:127\.0\.0\.1:\d+)/);
    const tcti = field(printed, /^tpm2-tools\s+-T (swtpm:host=127\.0\.0\.1,port=\d+)/);
    const root = field(printed, /^securityfs root\s+(\S+)/);
    const store = join(work, 'store');

    // The sim still holds its TPM connection: without the proxy this waited for swtpm, then timed out.
    const run = spawnSync(process.execPath, [CLI, 'run', '--securityfs', root, '--tpm', address, '--store', store, '--once'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(run.status, 0, run.stderr);
    const log = spawnSync(process.execPath, [CLI, 'log', '--store', store, '--format', 'ascii'], { encoding: 'latin1', timeout: 30_000 });
    assert.equal(log.status, 0, log.stderr);
    const oracle = readFileSync(join(root, '.imakeep-sim', 'oracle_ascii_runtime_measurements'), 'latin1');
    assert.equal(oracle.split('\n').length - 1, RECORDS);
    assert.equal(log.stdout, oracle, 'every record stored, byte for byte');

    const tools = spawnSync('tpm2_pcrread', ['-T', tcti, 'sha256:10'], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(tools.status, 0, tools.stderr);
    const ours = Tpm.open(address);
    try {
      const [v] = await ours.pcrRead([{ bank: 'sha256', pcr: 10 }]);
      assert.equal(/^\s*10\s*:\s*0x([0-9A-F]{64})\s*$/im.exec(tools.stdout)?.[1]?.toLowerCase(), toHex(v?.value ?? new Uint8Array()));
    } finally {
      await ours.close();
    }
  });
});

test('a bad option exits 2 with one stderr line naming the option and the value', () => {
  const cases: Array<{ args: string[]; message: string }> = [
    { args: ['--banks', 'sha1,md5'], message: "--banks: unknown bank 'md5' (sha1, sha256, sha384, sha512)" },
    { args: ['--rate', 'fast'], message: "--rate must be a number >= 0, not 'fast'" },
    { args: ['--count', '0x10'], message: "--count must be a non-negative integer, not '0x10'" },
  ];
  for (const { args, message } of cases) {
    const r = spawnSync(process.execPath, [SIM, ...args], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `sim: USAGE: ${message} (npm run sim -- --help)\n`);
  }
  const help = spawnSync(process.execPath, [SIM, '--help'], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^usage: npm run sim -- \[--mount DIR\]/);
});
