/**
 * Crash safety of `imakeep run` (Invariant 3): the daemon, a child process, is SIGKILLed at 200+
 * moments while records arrive, restarted each time. A quarter of the kills are at named steps
 * through the test seam IMAKEEP_TEST_CRASH_AT (between intent and kernel write, between kernel
 * write and outcome, ...), the rest at random times. Every 10 kills, and at the end, the log
 * (store + kernel) equals the emulator's oracle (nothing lost, duplicated or reordered; where a
 * pending removal cannot be decided without the TPM, after one cycle of the daemon), T equals
 * what the kernel removed, and the log replays to the TPM's PCRs.
 *
 * IMAKEEP_CRASH_KILLS=N scales the kill count (default 130 + 90); IMAKEEP_CRASH_VERBOSE=1 prints
 * each kill's cause, the emulator's counters and the daemon's last lines.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { COLLECTOR_STEPS } from '../../src/collector/index.js';
import { mulberry32 } from '../../src/testing/index.js';
import { replayPcr10, startRig, tpmPcr10, type Rig } from '../collector/_rig.js';
import { runCli, startDaemon, waitFor } from '../collector/_daemon.js';

/** Deterministic pseudo-random numbers in [0, 1), so a failure replays. */
function prng(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 0x1_0000_0000;
}

const DAEMON_ARGS = ['--interval', '40', '--cycle-at-records', '100', '--chunk-bytes', '8192'];

/**
 * `imakeep log` without the daemon has no TPM: when a kill left an `n` removal pending whose
 * kernel facts do not decide it (the list ended exactly at T+n, so nothing past the removed records
 * tells the readings apart; src/collector/recovery.ts `decideByHeadFacts`), it refuses with
 * COLLECTOR_RECOVERY_FAILED (ambiguous) rather than guess. The daemon decides by replay against the
 * TPM: one cycle of it, then the log must be the oracle. Any other refusal fails the test.
 */
async function logWithoutDaemon(rig: Rig, flavor: 'n' | 'staged', refusals: Map<string, number>): Promise<Buffer> {
  const args = ['log', '--store', rig.storeDir, '--securityfs', rig.emu.securityfsRoot, '--boot-id-file', rig.bootIdPath];
  const log = await runCli(args);
  if (log.code === 0) return log.stdout;
  assert.match(log.stderr, /COLLECTOR_RECOVERY_FAILED: .*\(ambiguous\)/, log.stderr);
  refusals.set('ambiguous', (refusals.get('ambiguous') ?? 0) + 1);
  const daemon = startDaemon(rig, ['--flavor', flavor, ...DAEMON_ARGS]);
  const cycled = await waitFor(() => daemon.output().includes('\ncycle '), 30_000);
  daemon.kill('SIGTERM');
  const exit = await daemon.exited;
  assert.ok(cycled, `the daemon did not complete a cycle to decide the pending removal: ${exit.stderr}`);
  const again = await runCli(args);
  assert.equal(again.code, 0, again.stderr);
  return again.stdout;
}

async function assertLogIsOracle(rig: Rig, flavor: 'n' | 'staged', refusals: Map<string, number>, what: string): Promise<void> {
  const served = await logWithoutDaemon(rig, flavor, refusals);
  const oracle = rig.oracle();
  assert.equal(served.length, oracle.length, `${what}: log length`);
  assert.ok(served.equals(oracle), `${what}: log equals the oracle`);
}

async function crashLoop(flavor: 'n' | 'staged', kills: number, seed: number, diagnostic: (msg: string) => void): Promise<void> {
  const rig = await startRig({ mux: true, flushHtable: flavor === 'staged', seed });
  await rig.store.close();
  const random = prng(seed);
  const steps: readonly string[] = flavor === 'n' ? COLLECTOR_STEPS.filter((s) => !s.startsWith('staged')) : COLLECTOR_STEPS;
  const byCause = new Map<string, number>();
  const refusals = new Map<string, number>();
  try {
    for (let i = 0; i < kills; i++) {
      const named = i % 4 === 0 ? steps[Math.floor(random() * steps.length)] : undefined;
      const env = named === undefined ? {} : { IMAKEEP_TEST_CRASH_AT: `${named}:${1 + Math.floor(random() * 2)}` };
      const daemon = startDaemon(rig, ['--flavor', flavor, ...DAEMON_ARGS], env);
      const appending = rig.append(50 + Math.floor(random() * 300));
      if (named === undefined) {
        await new Promise((r) => setTimeout(r, 100 + random() * 900));
        daemon.kill('SIGKILL');
      } else {
        // The daemon kills itself at the step; if this round never reaches it, kill it anyway.
        const timer = setTimeout(() => daemon.kill('SIGKILL'), 4000);
        await daemon.exited;
        clearTimeout(timer);
      }
      await appending;
      const exit = await daemon.exited;
      assert.ok(exit.signal === 'SIGKILL' || exit.code === 0, `run ${i} ended with ${exit.code}/${exit.signal}: ${exit.stderr}`);
      const cause = named === undefined ? 'random' : exit.signal === 'SIGKILL' ? named : 'timeout';
      if (process.env.IMAKEEP_CRASH_VERBOSE !== undefined) process.stderr.write(`kill ${i}: ${cause} ${JSON.stringify(rig.emu.stats())}\n${exit.stdout.toString('utf8').slice(-600)}\n`);
      byCause.set(cause, (byCause.get(cause) ?? 0) + 1);
      if (i % 10 === 9) await assertLogIsOracle(rig, flavor, refusals, `after kill ${i + 1}`);
    }
    diagnostic(`${flavor}: kills by cause ${JSON.stringify(Object.fromEntries(byCause))}; logs refused until the daemon decided ${JSON.stringify(Object.fromEntries(refusals))}`);
    // A clean run to the end: everything stored, covered and (all but the newest) removed.
    const daemon = startDaemon(rig, ['--flavor', flavor, ...DAEMON_ARGS]);
    const total = rig.emu.stats().recordsTotal;
    const cycles = (): number => daemon.output().split('\ncycle ').length - 1;
    const caughtUp = await waitFor(() => cycles() >= 3 && rig.emu.stats().recordsDeleted >= total - 400, 30_000);
    if (!caughtUp) {
      daemon.kill('SIGTERM');
      assert.fail(`the final run did not catch up: ${JSON.stringify(rig.emu.stats())}\n${daemon.output().slice(-3000)}\n${(await daemon.exited).stderr}`);
    }
    const output = daemon.output().length;
    daemon.kill('SIGTERM');
    const timer = setTimeout(() => daemon.kill('SIGKILL'), 10_000);
    const exit = await daemon.exited;
    clearTimeout(timer);
    assert.equal(exit.code, 0, `final run: ${exit.code}/${exit.signal} ${exit.stderr} ${exit.stdout.toString('utf8').slice(output - 500, output + 1500)}`);
    await assertLogIsOracle(rig, flavor, refusals, 'at the end');
    const log = await runCli(['log', '--store', rig.storeDir, '--securityfs', rig.emu.securityfsRoot, '--boot-id-file', rig.bootIdPath]);
    assert.deepEqual(replayPcr10(log.stdout), await tpmPcr10(rig.tpm), 'the log replays to the TPM');
    const status = await runCli(['status', '--store', rig.storeDir, '--json']);
    const s: unknown = JSON.parse(status.stdout.toString('utf8'));
    assert.ok(typeof s === 'object' && s !== null && 'boots' in s && Array.isArray(s.boots));
    assert.equal(s.boots[0].removed, rig.emu.stats().recordsDeleted, 'T = records the kernel removed');
    assert.equal(s.boots[0].pendingRemoval, null);
    diagnostic(`${flavor}: ${total} records, ${rig.emu.stats().recordsDeleted} removed`);
  } finally {
    await rig.stop();
  }
}

describe('collector crash safety (SIGKILL loop)', () => {
  const kills = Number(process.env.IMAKEEP_CRASH_KILLS ?? '130');
  it('flavour n: 130 kills', async (t) => {
    await crashLoop('n', kills, 11, (m) => t.diagnostic(m));
  });
  it('flavour staged (ima_flush_htable): 90 kills', async (t) => {
    await crashLoop('staged', Math.ceil((kills * 9) / 13), 23, (m) => t.diagnostic(m));
  });
});
