/**
 * When the collector runs a cycle: every `intervalMs`, earlier once the kernel's list passes
 * `cycleAtRecords` records or `cycleAtKmemBytes` bytes of modeled kernel memory
 * (docs/kernel.md#kernel-memory-per-record), looked at every `pollMs` through the record counter
 * (docs/kernel.md#counters).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { isImakeepError } from '../errors.js';
import { COLLECTOR_DEFAULTS, type CollectorOptions } from './config.js';

/** The schedule's knobs, defaults applied. */
export interface CycleSchedule {
  readonly intervalMs: number;
  readonly pollMs: number;
  readonly cycleAtRecords: number;
  readonly cycleAtKmemBytes: number;
}

/** The schedule of `options`. */
export function cycleSchedule(options: CollectorOptions): CycleSchedule {
  const intervalMs = options.intervalMs ?? COLLECTOR_DEFAULTS.intervalMs;
  return {
    intervalMs,
    pollMs: Math.min(intervalMs, options.pollMs ?? COLLECTOR_DEFAULTS.pollMs),
    cycleAtRecords: options.cycleAtRecords ?? COLLECTOR_DEFAULTS.cycleAtRecords,
    cycleAtKmemBytes: options.cycleAtKmemBytes ?? COLLECTOR_DEFAULTS.cycleAtKmemBytes,
  };
}

/** True when the kernel holds enough (`kernelRecords` records, `bytesPerRecord` each) for a cycle before its time. */
export function cycleDueEarly(schedule: CycleSchedule, kernelRecords: number, bytesPerRecord: number): boolean {
  return kernelRecords >= schedule.cycleAtRecords || kernelRecords * bytesPerRecord >= schedule.cycleAtKmemBytes;
}

/** The stable code of an error (`ImakeepError.code`, else the error's name). */
export function errorCode(e: unknown): string {
  return isImakeepError(e) ? e.code : e instanceof Error ? e.name : 'UNKNOWN';
}

/** Failures that end the run loop: the store cannot be trusted, or the collector stopped. */
export function endsRun(e: unknown): boolean {
  const code = errorCode(e);
  return code === 'STORE_CORRUPT' || code === 'STORE_CHAIN_BROKEN' || code === 'COLLECTOR_STOPPED';
}

/** What the wait between cycles reads. */
export interface ScheduleReadings {
  /** Records the kernel holds now; throws when the counter cannot be read. */
  kernelRecords(): number;
  /** Modeled kernel memory per record (bytes). */
  bytesPerRecord(): number;
}

/**
 * Waits until the next cycle is due or `signal` aborts. The counter is advisory: when it cannot
 * be read, the timer still runs cycles.
 */
export async function waitForCycle(signal: AbortSignal, schedule: CycleSchedule, readings: ScheduleReadings): Promise<void> {
  const due = performance.now() + schedule.intervalMs;
  while (!signal.aborted && performance.now() < due) {
    await delay(Math.min(schedule.pollMs, due - performance.now()), undefined, { signal }).catch(() => undefined);
    if (signal.aborted) return;
    let count: number;
    try {
      count = readings.kernelRecords();
    } catch {
      continue;
    }
    if (cycleDueEarly(schedule, count, readings.bytesPerRecord())) return;
  }
}
