/**
 * The fast version of test/slow/collector-crash-steady.test.ts (kills inside both windows of a
 * removal while the kernel appends at a steady rate): a few kills per window, every restart comes
 * up and cycles, every `imakeep log` without the daemon is the oracle's prefix or a typed refusal.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { steadyCrashLoop } from './_steady-crash.js';

describe('restart under steady appends (fast)', () => {
  it('flavour n: kills between intent and write, between write and outcome; restarts immediate and delayed', async (t) => {
    const report = await steadyCrashLoop({ flavor: 'n', kills: 4, seed: 5, windows: ['intent-journaled', 'kernel-written'] });
    t.diagnostic(JSON.stringify(report));
    assert.equal(report.restartsRefused, 0);
    assert.deepEqual(report.killsByWindow, { 'intent-journaled': 2, 'kernel-written': 2 });
    // Each log is the oracle's prefix, or (checked in the loop) refused with COLLECTOR_RECOVERY_FAILED
    // before printing anything: a removal killed before its write, when the list ended at T+n, is
    // told from a done one only by replay against the TPM, which only the daemon has.
    assert.equal(report.logsChecked + (report.logsRefused.COLLECTOR_RECOVERY_FAILED ?? 0), 4);
    assert.ok(report.logsChecked >= 2, `most logs checked against the oracle (refused: ${JSON.stringify(report.logsRefused)})`);
  });
});
