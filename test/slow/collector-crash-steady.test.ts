/**
 * Issue 11's kill test: the emulated kernel appends at a steady rate THROUGHOUT while `imakeep run`
 * is killed inside a removal's windows (between the journaled intent and the kernel write, between
 * the write and the journaled outcome; for `staged` also between `D` and the outcome) and restarted
 * at once or after a while. Every restart comes up and completes a cycle (restarts refused: 0);
 * after every kill `imakeep log` without the daemon is the oracle's prefix or refuses with
 * COLLECTOR_RECOVERY_FAILED. The figures (kills per window, restarts refused, logs checked) are
 * printed as diagnostics. IMAKEEP_CRASH_KILLS=N scales the kill count (default 40).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { steadyCrashLoop } from '../collector/_steady-crash.js';

describe('restart under steady appends (SIGKILL inside the removal windows)', () => {
  const kills = Number(process.env.IMAKEEP_CRASH_KILLS ?? '40');
  it(`flavour n: ${kills} kills`, async (t) => {
    const report = await steadyCrashLoop({ flavor: 'n', kills, seed: 31, windows: ['intent-journaled', 'kernel-written'] });
    t.diagnostic(`flavour n: ${JSON.stringify(report)}`);
    assert.equal(report.restartsRefused, 0);
    assert.equal((report.killsByWindow['intent-journaled'] ?? 0) + (report.killsByWindow['kernel-written'] ?? 0), kills);
    assert.equal(report.logsChecked + Object.values(report.logsRefused).reduce((a, b) => a + b, 0), kills);
  });
  it(`flavour staged: ${Math.ceil(kills * 0.75)} kills`, async (t) => {
    const n = Math.ceil(kills * 0.75);
    const report = await steadyCrashLoop({ flavor: 'staged', kills: n, seed: 37, windows: ['intent-journaled', 'kernel-written', 'staged-deleted'] });
    t.diagnostic(`flavour staged: ${JSON.stringify(report)}`);
    assert.equal(report.restartsRefused, 0);
    assert.equal(Object.values(report.killsByWindow).reduce((a, b) => a + b, 0), n);
    assert.equal(report.logsChecked + Object.values(report.logsRefused).reduce((a, b) => a + b, 0), n);
  });
});
