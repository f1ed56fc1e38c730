/**
 * Workloads for the securityfs emulator, shared by `npm run demo` and the memory-pressure bench:
 * when records arrive (a schedule of bursts and steady rates, pure) and what they are (a
 * realistic mix of measured files, or a runaway policy measuring one changing log file).
 *
 * Sizes follow ima-doc (docs/ima-formats.md#sizes): "a reasonable policy will trigger about 5000 entries
 * at boot"; "a faulty policy that measures rapidly changing files like /var/log can have
 * 100,000's of records".
 */
import { createHash } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import type { ImaRecord } from '../src/ima/index.js';
import { ImaWorkload, digestNgField, makeRecord, nameNgField } from '../src/testing/index.js';

/** A part of a schedule: `records` at once at second `at`, or `perSecond` from `from` to `to`. */
export type WorkloadPhase =
  | { readonly kind: 'burst'; readonly at: number; readonly records: number }
  | { readonly kind: 'rate'; readonly from: number; readonly to: number; readonly perSecond: number };

/** Records every phase has asked for by second `t` since the start (cumulative, whole records). */
export function dueRecords(phases: readonly WorkloadPhase[], t: number): number {
  let due = 0;
  for (const p of phases) {
    if (p.kind === 'burst') due += t >= p.at ? p.records : 0;
    else due += Math.floor(Math.max(0, Math.min(t, p.to) - p.from) * p.perSecond);
  }
  return due;
}

/** Records the whole schedule appends. */
export function totalRecords(phases: readonly WorkloadPhase[]): number {
  return dueRecords(phases, lastSecond(phases));
}

/** The second at which the last phase has delivered everything. */
export function lastSecond(phases: readonly WorkloadPhase[]): number {
  return phases.reduce((end, p) => Math.max(end, p.kind === 'burst' ? p.at : p.to), 0);
}

/** What the records are. */
export type RecordKind = 'files' | 'runaway-log';

/** A named workload: schedule and record kind. */
export interface Workload {
  readonly name: string;
  readonly description: string;
  readonly records: RecordKind;
  readonly phases: readonly WorkloadPhase[];
}

/** Record count of the boot burst (ima-doc's "about 5000 entries at boot"). */
export const BOOT_RECORDS = 5000;
/** Rate of the steady workload: a busy device's trickle of new executables and configs. */
export const STEADY_PER_SECOND = 20;
/** Rate of the runaway policy (issue 7: a log file measured at 1,000 records/s). */
export const RUNAWAY_PER_SECOND = 1000;

/** The three memory-pressure workloads, each `seconds` long. */
export function benchWorkloads(seconds: number): readonly Workload[] {
  return [
    {
      name: 'boot',
      description: `boot burst: ${BOOT_RECORDS.toLocaleString('en-US')} records at once, then nothing`,
      records: 'files',
      phases: [{ kind: 'burst', at: 0, records: BOOT_RECORDS }],
    },
    {
      name: 'steady',
      description: `steady: ${STEADY_PER_SECOND} records/s for ${seconds} s`,
      records: 'files',
      phases: [{ kind: 'rate', from: 0, to: seconds, perSecond: STEADY_PER_SECOND }],
    },
    {
      name: 'runaway',
      description: `runaway policy: one log file re-measured ${RUNAWAY_PER_SECOND.toLocaleString('en-US')} times/s for ${seconds} s`,
      records: 'runaway-log',
      phases: [{ kind: 'rate', from: 0, to: seconds, perSecond: RUNAWAY_PER_SECOND }],
    },
  ];
}

/** The demo's day in the life: boot burst, a steady trickle, a burst (a package upgrade), trickle. */
export function demoWorkload(seconds: number): Workload {
  return {
    name: 'demo',
    description: `boot burst of ${BOOT_RECORDS.toLocaleString('en-US')}, ${STEADY_PER_SECOND} records/s, a burst of 2,000 at ${Math.round(seconds / 2)} s`,
    records: 'files',
    phases: [
      { kind: 'burst', at: 0, records: BOOT_RECORDS },
      { kind: 'rate', from: 0, to: seconds, perSecond: STEADY_PER_SECOND },
      { kind: 'burst', at: Math.round(seconds / 2), records: 2000 },
    ],
  };
}

/** An endless supply of records, the first being boot_aggregate. */
export interface RecordSupply {
  take(n: number): ImaRecord[];
}

/** Path the runaway policy keeps measuring. */
export const RUNAWAY_PATH = '/var/log/app/events.log';

/**
 * Records of `kind`: `files` = ImaWorkload ima-ng (sha256 file hashes, realistic paths, 0.1 %
 * violations); `runaway-log` = one log file whose content changes between measurements, so
 * every record has a new file digest and the kernel's duplicate check never drops one
 * (docs/kernel.md#what-removal-frees). Both begin with boot_aggregate = `bootAggregate`.
 */
export function recordSupply(kind: RecordKind, bootAggregate: Uint8Array, seed = 7): RecordSupply {
  const files = new ImaWorkload({ seed, template: 'ima-ng', violationRate: 0.001, bootAggregate });
  if (kind === 'files') return { take: (n) => [...files.records(n)] };
  let started = false;
  let version = 0;
  const nameField = nameNgField(RUNAWAY_PATH);
  const next = (): ImaRecord => {
    if (!started) {
      started = true;
      return files.next();
    }
    const digest = createHash('sha256').update(`${RUNAWAY_PATH} version ${version++}`).digest();
    return makeRecord('ima-ng', [digestNgField('sha256', digest), nameField]);
  };
  return { take: (n) => Array.from({ length: n }, next) };
}

/** Where {@link driveWorkload} appends: the emulator's `append`. */
export type AppendRecords = (records: ImaRecord[]) => Promise<unknown>;

/** Records appended per write to the emulator (its own batch is 512). */
const APPEND_BATCH = 512;
/** How often the driver wakes to catch up with the schedule. */
const TICK_MS = 50;

/**
 * Appends records on schedule until the schedule ends or `signal` aborts; returns records
 * appended. When appending cannot keep up (a slow machine), it falls behind rather than skipping:
 * the caller measures the achieved rate from the emulator's counters.
 */
export async function driveWorkload(
  workload: Workload,
  supply: RecordSupply,
  append: AppendRecords,
  signal: AbortSignal,
  onProgress?: (appended: number, seconds: number) => void,
): Promise<number> {
  const total = totalRecords(workload.phases);
  const start = performance.now();
  let appended = 0;
  while (!signal.aborted && appended < total) {
    const t = (performance.now() - start) / 1000;
    const due = Math.min(total, dueRecords(workload.phases, t)) - appended;
    if (due <= 0) {
      await delay(TICK_MS, undefined, { signal }).catch(() => undefined);
      continue;
    }
    const n = Math.min(due, APPEND_BATCH);
    await append(supply.take(n));
    appended += n;
    onProgress?.(appended, t);
  }
  return appended;
}
