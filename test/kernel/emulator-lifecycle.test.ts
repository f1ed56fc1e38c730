/**
 * The emulator's life cycle: the sim (`npm run sim`, hw/sim.ts) runs until SIGTERM and unmounts; a stale mount left by a
 * killed daemon is cleaned up at the next start; a test process that dies takes its daemon (and
 * mount) with it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ImaWorkload } from '../../src/testing/index.js';
import { REPO_ROOT } from './helpers.js';
import { startSecurityfsEmulator } from '../../hw/securityfs/emulator.js';

function mounted(dir: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === dir);
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await delay(20);
  }
  return cond();
}

/** `node dist/hw/sim.js --tpm none ARGS` (no TPM: records are logged, not extended) as a child process: its stdout so far, and its exit code once it exits. */
function startSim(args: readonly string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'dist', 'hw', 'sim.js'), '--tpm', 'none', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

describe('emulator life cycle', () => {
  let work: string;
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'imakeep-lifecycle-'));
  });
  after(() => {
    for (const d of ['cli', 'cli-capture', 'stale', 'orphan']) if (mounted(join(work, d))) spawn('fusermount3', ['-u', '-z', join(work, d)]);
    rmSync(work, { recursive: true, force: true });
  });

  it('the sim appends --count records, runs until SIGTERM, unmounts, exits 0', async () => {
    const dir = join(work, 'cli');
    const { child, output, exited } = startSim(['--mount', dir, '--rate', '0', '--count', '300']);
    try {
      assert.ok(await waitFor(() => output().includes('running until'), 15_000), output());
      assert.equal(readFileSync(join(dir, 'ima', 'runtime_measurements_count'), 'latin1'), '300\n');
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
      assert.equal(mounted(dir), false);
      assert.match(output(), /stopping after 300 records/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('the sim with --source replays a capture byte for byte', async () => {
    const dir = join(work, 'cli-capture');
    const capture = join(REPO_ROOT, 'test', 'fixtures', 'real-kernel', 'keys-ima-ng', 'log-a');
    const { child, output, exited } = startSim(['--mount', dir, '--source', join(capture, 'binary_runtime_measurements'), '--rate', '0']);
    try {
      assert.ok(await waitFor(() => output().includes('running until'), 15_000), output());
      assert.ok(readFileSync(join(dir, 'ima', 'ascii_runtime_measurements')).equals(readFileSync(join(capture, 'ascii_runtime_measurements'))));
      child.kill('SIGINT');
      assert.equal(await exited, 0);
      assert.equal(mounted(dir), false);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('a stale mount of a killed daemon is cleaned up at start', async () => {
    const dir = join(work, 'stale');
    const first = await startSecurityfsEmulator({ mountDir: dir });
    process.kill(first.pid, 'SIGKILL');
    assert.ok(await waitFor(() => !isAlive(first.pid)));
    assert.equal(mounted(dir), true, 'the mount outlives a SIGKILLed daemon');
    const second = await startSecurityfsEmulator({ mountDir: dir });
    try {
      await second.append(new ImaWorkload({ seed: 1 }).records(3));
      assert.equal(readFileSync(join(dir, 'ima', 'runtime_measurements_count'), 'latin1'), '3\n');
      await first.stop();
      assert.equal(mounted(dir), true, "the dead emulator's stop leaves the new mount alone");
    } finally {
      await second.stop();
    }
    assert.equal(mounted(dir), false);
  });

  it('the daemon unmounts and exits when the process that started it dies', async () => {
    const dir = join(work, 'orphan');
    const script = `
      import { startSecurityfsEmulator } from '${join(REPO_ROOT, 'dist', 'hw', 'securityfs', 'emulator.js')}';
      const emu = await startSecurityfsEmulator({ mountDir: ${JSON.stringify(dir)} });
      process.stdout.write(String(emu.pid) + '\\n');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = await new Promise<number>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
    assert.equal(mounted(dir), true);
    child.kill('SIGKILL');
    assert.ok(await waitFor(() => !mounted(dir) && !isAlive(pid)), 'daemon gone and unmounted');
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
