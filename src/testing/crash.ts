/**
 * The crash-test seam of `imakeep run` (environment, never set in production):
 * `IMAKEEP_TEST_CRASH_AT=STEP[:N]` makes the daemon SIGKILL itself the N-th time (default 1st) it
 * passes collector step STEP (one of COLLECTOR_STEPS), e.g. `kernel-written` = after the kernel
 * write, before its journal outcome. `imakeep run` imports this file only when the variable is set.
 */
import { COLLECTOR_STEPS, type CollectorHooks } from '../collector/index.js';

/** The step and count of an `IMAKEEP_TEST_CRASH_AT` value, or undefined when unset or malformed. */
export function parseCrashAt(value: string | undefined): { readonly step: string; readonly nth: number } | undefined {
  const m = value === undefined ? null : /^([a-z-]+)(?::(\d+))?$/.exec(value);
  if (m === null || m[1] === undefined) return undefined;
  return { step: m[1], nth: Math.max(1, Number(m[2] ?? '1')) };
}

/** Collector hooks that SIGKILL this process as `value` (an `IMAKEEP_TEST_CRASH_AT`) says, or none. */
export function crashHook(value: string | undefined): CollectorHooks | undefined {
  const crash = parseCrashAt(value);
  if (crash === undefined || !(COLLECTOR_STEPS as readonly string[]).includes(crash.step)) return undefined;
  let seen = 0;
  return {
    step(step) {
      if (step === crash.step && ++seen >= crash.nth) process.kill(process.pid, 'SIGKILL');
    },
  };
}
