/**
 * The kill loop of issue 11 with the emulated kernel appending at a steady rate THROUGHOUT (not in
 * bursts with pauses): `imakeep run` is killed by the crash seam inside a removal's windows
 * (between the journaled intent and the kernel write, between the write and the journaled
 * outcome), and restarted at once or after a while, records arriving all along. Every restart must
 * come up and complete a cycle before its own kill; after every kill, `imakeep log` without the
 * daemon must print a prefix of the oracle at least as long as the oracle was when it started
 * (nothing hidden, nothing invented), or refuse with a code.
 */
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import type { CollectorStep } from '../../src/collector/index.js';
import { mulberry32 } from '../../src/testing/index.js';
import { startRig, type Rig } from './_rig.js';
import { runCli, startDaemon } from './_daemon.js';

const DAEMON_ARGS = ['--interval', '40', '--cycle-at-records', '100', '--chunk-bytes', '8192'];

/** What a loop counted (the figures issue 11 asks for). */
export interface SteadyCrashReport {
  readonly killsByWindow: Readonly<Record<string, number>>;
  /** Restarts that exited, timed out or never completed a cycle before their kill: must be 0. */
  readonly restartsRefused: number;
  readonly restarts: { readonly immediate: number; readonly delayed: number };
  /** `imakeep log` runs whose output was checked against the oracle. */
  readonly logsChecked: number;
  /** `imakeep log` runs that refused, by error code. */
  readonly logsRefused: Readonly<Record<string, number>>;
  /** Records appended during the loop. */
  readonly recordsAppended: number;
}

/** Options of {@link steadyCrashLoop}. */
export interface SteadyCrashOptions {
  readonly flavor: 'n' | 'staged';
  readonly kills: number;
  readonly seed: number;
  /** The steps to kill at (the daemon kills itself at the step's second time: its first cycle completes). */
  readonly windows: readonly CollectorStep[];
  /** Records per append and the pause between appends (the steady rate). */
  readonly batch?: number;
  readonly everyMs?: number;
}

async function checkLog(rig: Rig, refused: Map<string, number>): Promise<boolean> {
  const before = rig.oracle().length;
  const log = await runCli(['log', '--store', rig.storeDir, '--securityfs', rig.emu.securityfsRoot, '--boot-id-file', rig.bootIdPath]);
  if (log.code !== 0) {
    // A refusal is the undecided pending removal, said before any record is printed.
    const code = /\b([A-Z]+_[A-Z_]+)\b/.exec(log.stderr)?.[1];
    assert.equal(code, 'COLLECTOR_RECOVERY_FAILED', `imakeep log failed: ${log.stderr}`);
    assert.equal(log.stdout.length, 0, 'a refusal prints no part of the log');
    refused.set(code, (refused.get(code) ?? 0) + 1);
    return false;
  }
  const oracle = rig.oracle();
  assert.ok(log.stdout.length >= before, `the log (${log.stdout.length} B) holds every record logged before it started (${before} B)`);
  assert.ok(log.stdout.equals(oracle.subarray(0, log.stdout.length)), 'the log is a prefix of the oracle');
  return true;
}

/** Runs the loop on a fresh rig; stops it. */
export async function steadyCrashLoop(opts: SteadyCrashOptions): Promise<SteadyCrashReport> {
  const rig = await startRig({ mux: true, flushHtable: opts.flavor === 'staged', seed: opts.seed });
  await rig.store.close();
  const next = mulberry32(opts.seed);
  const random = (): number => next() / 0x1_0000_0000;
  const killsByWindow: Record<string, number> = {};
  const refusedLogs = new Map<string, number>();
  let restartsRefused = 0;
  let logsChecked = 0;
  let immediate = 0;
  let delayed = 0;
  let appended = 0;
  let feeding = true;
  const feeder = (async () => {
    while (feeding) {
      appended += (await rig.append(opts.batch ?? 10)).length;
      await delay(opts.everyMs ?? 20);
    }
  })();
  try {
    for (let i = 0; i < opts.kills; i++) {
      const window = opts.windows[i % opts.windows.length];
      assert.ok(window !== undefined);
      const daemon = startDaemon(rig, ['--flavor', opts.flavor, ...DAEMON_ARGS], { IMAKEEP_TEST_CRASH_AT: `${window}:2` });
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        daemon.kill('SIGKILL');
      }, 30_000);
      const exit = await daemon.exited;
      clearTimeout(timer);
      const out = exit.stdout.toString('utf8');
      const cycled = /^cycle \d+: .* drained \d+/m.test(out);
      if (timedOut || exit.signal !== 'SIGKILL' || !cycled) {
        restartsRefused++;
        process.stderr.write(`run ${i} (${window}): ${timedOut ? 'timed out' : `${exit.code}/${exit.signal}`}, cycled ${cycled}\n${out.slice(-1500)}\n${exit.stderr}\n`);
      } else {
        killsByWindow[window] = (killsByWindow[window] ?? 0) + 1;
      }
      if (await checkLog(rig, refusedLogs)) logsChecked++;
      if (i % 2 === 1) {
        delayed++;
        await delay(800 + random() * 1200);
      } else {
        immediate++;
      }
    }
  } finally {
    feeding = false;
    await feeder.catch(() => undefined);
    await rig.stop();
  }
  return {
    killsByWindow,
    restartsRefused,
    restarts: { immediate, delayed },
    logsChecked,
    logsRefused: Object.fromEntries(refusedLogs),
    recordsAppended: appended,
  };
}
