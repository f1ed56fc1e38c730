/**
 * Ingest bench: the collector (in this process) draining the FUSE securityfs emulator into a
 * LevelDB store on disk, quoting, matching and removing, for 1,000,000 records.
 *
 * Measured: records/s through the collector (time inside `runOnce` only; the emulator's appends
 * are the "kernel" and not counted), RSS and V8 heap at 10k, 100k, 500k and 1M records (after a
 * full GC: what is retained, not garbage waiting), RSS split into RssAnon / RssFile / RssShmem
 * (/proc/self/status) and by mapping (/proc/self/smaps: LevelDB's mmapped `*.ldb` tables, malloc's
 * brk heap, other anonymous maps, other files), bytes this process wrote to the block layer
 * (/proc/self/io write_bytes: LevelDB log, tables, compactions) per record against the record's
 * raw size in the SHA-1 binary list, and the writer-lock hold time of the removals (p50/p99/max).
 *
 * The TPM is the software stand-in of hw/soft-tpm.ts (real TPMS_ATTEST structures,
 * ECDSA-signed, verified by the collector as usual): swtpm costs ~0.2 ms per PCR_Extend, which
 * would make the emulated kernel, not the collector, the bottleneck of a 1M run. The emulated
 * kernel runs in a feeder process (bench/_ingest-feeder.ts), as the kernel is not in the daemon's
 * process on a device: it generates the records, logs them into the emulator and extends its own
 * software PCRs, then reports their values, which this process's software TPM quotes.
 *
 *   node dist/bench/ingest.js [--records N] [--batch N] [--flavor n|staged] [--quick]
 *                             [--sample-at N,N...] [--glibc-malloc]
 *
 * Writes bench/results/ingest.json.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { type BankName } from '../src/ima/index.js';
import { openStore } from '../src/store/index.js';
import { Collector, type TimingSummary } from '../src/collector/index.js';
import { DAEMON_MALLOC_ENV } from '../src/daemon/index.js';
import { SoftQuoteSource } from '../hw/soft-tpm.js';
import { DEVICE_NODE_FLAGS, REPO_ROOT } from '../hw/collector-process.js';
import { parseProcStatus } from '../hw/proc.js';
import { describeMachine, type MachineDescription } from './_machine.js';
import { startFeeder } from './_ingest-feeder.js';

/** Options of {@link runIngest}. */
export interface IngestOptions {
  readonly records: number;
  /** Records appended between two collector cycles. */
  readonly batch: number;
  readonly flavor: 'n' | 'staged';
  /** Record counts after which memory is sampled. */
  readonly sampleAt: readonly number[];
  /**
   * Write each `runOnce`'s [start, end] there (JSON, CLOCK_MONOTONIC µs), to keep only the
   * collector's samples of a `--cpu-prof` of the child (`bench/profile-cycles.ts`).
   */
  readonly cycleSpansPath?: string;
}

/**
 * Resident memory of this process by where it lives, KiB: /proc/self/status (RssAnon, RssFile,
 * RssShmem) and /proc/self/smaps summed per kind of mapping (proc(5)).
 */
export interface ResidentSplit {
  readonly rssAnonKiB: number;
  readonly rssFileKiB: number;
  readonly rssShmemKiB: number;
  /** Rss of LevelDB table files (`*.ldb`), mmapped read-only by LevelDB 1.20 (`env_posix.cc`). */
  readonly ldbKiB: number;
  /** Rss of the brk heap (`[heap]`): glibc malloc's main arena. */
  readonly brkHeapKiB: number;
  /** Rss of other anonymous mappings: V8 spaces, malloc's thread arenas, thread stacks. */
  readonly anonMappingsKiB: number;
  /** Rss of other file mappings: node, shared libraries, native addons. */
  readonly otherFileKiB: number;
  /** Number of `*.ldb` files mapped. */
  readonly ldbMappings: number;
}

/** Memory after a full GC. */
export interface MemorySample extends ResidentSplit {
  readonly records: number;
  readonly rssMiB: number;
  readonly heapUsedMiB: number;
  readonly heapTotalMiB: number;
  /** Memory of C++ objects bound to JS (includes array buffers). */
  readonly externalMiB: number;
  readonly arrayBuffersMiB: number;
}

/** What {@link runIngest} measured. */
export interface IngestResult {
  readonly records: number;
  readonly flavor: 'n' | 'staged';
  readonly batch: number;
  /** Records ÷ seconds spent inside the collector's cycles. */
  readonly recordsPerSecond: number;
  /** CPU time of this process (all its threads) inside `runOnce`, per record. */
  readonly cpuMicrosecondsPerRecord: number;
  /**
   * Of it, the main thread's (JavaScript, the synchronous FUSE reads); the rest is V8's helper
   * threads (parallel scavenges, concurrent marking and compilation) and libuv's pool (file
   * writes, `fdatasync`, LevelDB's synced writes).
   */
  readonly mainThreadCpuMicrosecondsPerRecord: number;
  /** CPU per record of the cycles after the first sample point (the process warm: steady state). */
  readonly warmCpuMicrosecondsPerRecord: number;
  /** Reopening the store and the collector over the whole stored log, to the end of the first cycle. */
  readonly restartToFirstCycleMs: number;
  readonly collectorSeconds: number;
  readonly wallSeconds: number;
  readonly memory: readonly MemorySample[];
  /** write_bytes of this process during the run ÷ records. */
  readonly flashBytesPerRecord: number;
  /** Mean size of a record in the SHA-1 binary list. */
  readonly rawRecordBytes: number;
  readonly writeAmplification: number;
  readonly writerLockHoldMs: TimingSummary;
  readonly removed: number;
  readonly removals: number;
  readonly checkpoints: number;
  readonly cycles: number;
  /** The kernel's list at the end (records not yet removed). */
  readonly kernelRecordsAtEnd: number;
}

/** A full GC (V8's `gc()`, exposed at run time). */
function fullGc(): void {
  setFlagsFromString('--expose-gc');
  const gc: unknown = runInNewContext('gc');
  if (typeof gc === 'function') gc();
}

const MiB = 1024 * 1024;

/**
 * Sums the `Rss:` of /proc/PID/smaps per kind of mapping, from the pathname of each mapping's
 * header line (`start-end perms offset dev inode [pathname]`).
 */
export function splitSmaps(smaps: string): Pick<ResidentSplit, 'ldbKiB' | 'brkHeapKiB' | 'anonMappingsKiB' | 'otherFileKiB' | 'ldbMappings'> {
  let ldbKiB = 0;
  let brkHeapKiB = 0;
  let anonMappingsKiB = 0;
  let otherFileKiB = 0;
  let ldbMappings = 0;
  let path = '';
  for (const line of smaps.split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (header !== null) {
      path = header[1] ?? '';
      if (path.endsWith('.ldb')) ldbMappings++;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB$/.exec(line);
    if (rss === null) continue;
    const kib = Number(rss[1]);
    if (path.endsWith('.ldb')) ldbKiB += kib;
    else if (path === '[heap]') brkHeapKiB += kib;
    else if (path === '' || path.startsWith('[')) anonMappingsKiB += kib;
    else otherFileKiB += kib;
  }
  return { ldbKiB, brkHeapKiB, anonMappingsKiB, otherFileKiB, ldbMappings };
}

/** {@link ResidentSplit} of process `pid` (this one by default) now. */
export function residentSplit(pid: number | 'self' = 'self'): ResidentSplit {
  const status = parseProcStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return {
    rssAnonKiB: status.get('RssAnon') ?? Number.NaN,
    rssFileKiB: status.get('RssFile') ?? Number.NaN,
    rssShmemKiB: status.get('RssShmem') ?? Number.NaN,
    ...splitSmaps(readFileSync(`/proc/${pid}/smaps`, 'utf8')),
  };
}

function memorySample(records: number): MemorySample {
  fullGc();
  const m = process.memoryUsage();
  const r = (n: number): number => Math.round((n / MiB) * 10) / 10;
  return { records, rssMiB: r(m.rss), heapUsedMiB: r(m.heapUsed), heapTotalMiB: r(m.heapTotal), externalMiB: r(m.external), arrayBuffersMiB: r(m.arrayBuffers), ...residentSplit() };
}

/** CPU time of this process's main thread so far, ns (/proc/PID/task/PID/schedstat, first field: time on a CPU). */
function mainThreadCpuNs(): number {
  return Number(readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, 'latin1').split(' ')[0]);
}

/** write_bytes of /proc/self/io. */
function writeBytes(): number {
  const m = /^write_bytes: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'));
  return Number(m?.[1] ?? 0);
}

/**
 * Feeds `records` synthetic records into the emulator and runs a collector cycle after every
 * `batch`; samples memory at `sampleAt`. Everything it starts is stopped, its temp dir removed.
 */
export async function runIngest(opts: IngestOptions): Promise<IngestResult> {
  // On disk (ext4 here), not tmpfs: write_bytes counts block-layer writes only.
  const work = mkdtempSync(join(REPO_ROOT, '.bench-ingest-'));
  const feeder = await startFeeder({ flavor: opts.flavor });
  try {
    writeFileSync(join(work, 'boot_id'), '0b1e55ed-0000-4000-8000-000000000000\n');
    writeFileSync(join(work, 'cmdline'), opts.flavor === 'staged' ? 'ima_flush_htable\n' : 'ro\n');
    const store = await openStore(join(work, 'store'));
    const quotes = new SoftQuoteSource();
    try {
      const collectorOptions = {
        store,
        quotes,
        securityfsRoot: feeder.securityfsRoot,
        bootIdPath: join(work, 'boot_id'),
        cmdlinePath: join(work, 'cmdline'),
        flavor: opts.flavor,
        banks: ['sha1', 'sha256'] as BankName[],
        stagedQuoteDelayMs: 0,
      };
      const collector = await Collector.open(collectorOptions);
      const memory: MemorySample[] = [memorySample(0)];
      const pending = [...opts.sampleAt].sort((a, b) => a - b);
      const writes0 = writeBytes();
      const t0 = performance.now();
      let collectorMs = 0;
      let collectorCpuUs = 0;
      let mainThreadNs = 0;
      // After the first sample point the process is warm: the first cycles also pay V8's
      // compilation of the hot code, which a long-running daemon pays once.
      const warmAt = pending[0] ?? 0;
      let warmCpuUs = 0;
      let rawBytes = 0;
      // Each runOnce's span, CLOCK_MONOTONIC µs: the clock of `--cpu-prof` sample times (V8's TimeTicks).
      const cycleSpans: [bigint, bigint][] = [];
      for (let appended = 0; appended < opts.records; ) {
        // The "kernel" is another process (bench/_ingest-feeder.ts): it generates, logs and
        // extends, and its writes to the emulator's append file are its own write_bytes. Fed from
        // this process, its garbage was scavenged inside the collector's cycles and its buffers
        // were this process's malloc: flavour n, 50k records, 8 alternated runs at load 8-10,
        // medians: CPU inside runOnce 29.1 -> 24.1 µs/record, RssAnon at the end 29.5 -> 23.4 MiB,
        // RSS 71.3 -> 65.0 MiB (bench/results/lean.md, "Session 3").
        const fed = await feeder.feed(Math.min(opts.batch, opts.records - appended));
        appended += fed.records;
        rawBytes += fed.rawBytes;
        quotes.setPcrs(fed.pcrs);
        const c0 = performance.now();
        const cpu0 = process.cpuUsage();
        const h0 = process.hrtime.bigint();
        const main0 = mainThreadCpuNs();
        await collector.runOnce();
        collectorMs += performance.now() - c0;
        const cpu = process.cpuUsage(cpu0);
        mainThreadNs += mainThreadCpuNs() - main0;
        cycleSpans.push([h0 / 1000n, process.hrtime.bigint() / 1000n]);
        collectorCpuUs += cpu.user + cpu.system;
        if (appended - fed.records >= warmAt) warmCpuUs += cpu.user + cpu.system;
        while (pending[0] !== undefined && appended >= pending[0]) {
          memory.push(memorySample(appended));
          pending.shift();
        }
      }
      const wallSeconds = (performance.now() - t0) / 1000;
      if (opts.cycleSpansPath !== undefined) writeFileSync(opts.cycleSpansPath, `${JSON.stringify(cycleSpans.map(([a, b]) => [Number(a), Number(b)]))}\n`);
      const written = writeBytes() - writes0;
      const status = collector.status();
      const rawRecordBytes = rawBytes / opts.records;
      await collector.close();
      // A device reboots often: from opening the store to the end of the first cycle, with the
      // whole log stored (a restart of the daemon on the same kernel).
      await store.close();
      const r0 = performance.now();
      const reopened = await openStore(join(work, 'store'));
      const restarted = await Collector.open({ ...collectorOptions, store: reopened });
      await restarted.runOnce();
      const restartToFirstCycleMs = Math.round(performance.now() - r0);
      await restarted.close();
      await reopened.close();
      const kernel = await feeder.stats();
      return {
        restartToFirstCycleMs,
        cpuMicrosecondsPerRecord: Math.round((collectorCpuUs / opts.records) * 100) / 100,
        mainThreadCpuMicrosecondsPerRecord: Math.round(mainThreadNs / opts.records / 10) / 100,
        warmCpuMicrosecondsPerRecord: opts.records > warmAt ? Math.round((warmCpuUs / (opts.records - warmAt)) * 100) / 100 : Number.NaN,
        records: opts.records,
        flavor: opts.flavor,
        batch: opts.batch,
        recordsPerSecond: Math.round(opts.records / (collectorMs / 1000)),
        collectorSeconds: Math.round(collectorMs) / 1000,
        wallSeconds: Math.round(wallSeconds * 1000) / 1000,
        memory,
        flashBytesPerRecord: Math.round((written / opts.records) * 10) / 10,
        rawRecordBytes: Math.round(rawRecordBytes * 10) / 10,
        writeAmplification: Math.round((written / opts.records / rawRecordBytes) * 100) / 100,
        writerLockHoldMs: status.metrics.writerLockHoldMs,
        removed: status.removed,
        removals: status.metrics.removals,
        checkpoints: status.metrics.checkpoints,
        cycles: status.metrics.cycles,
        kernelRecordsAtEnd: kernel.recordsCurrent + kernel.recordsStaged,
      };
    } finally {
      await store.close();
    }
  } finally {
    await feeder.stop();
    rmSync(work, { recursive: true, force: true });
  }
}


/** Options of {@link runIngestInChild}. */
export interface ChildIngestOptions extends IngestOptions {
  /** Run with glibc's malloc defaults instead of {@link DAEMON_MALLOC_ENV} (for comparison). */
  readonly glibcMalloc?: boolean;
}

/**
 * {@link runIngest} in a child process under the daemon's small-device V8 flags and malloc
 * settings (as `imakeep run` runs on a device; with default flags V8 keeps 16 MiB semi-spaces
 * and lets garbage pile up, which says little about what the collector retains), each run in a
 * fresh process so that one run's RSS does not carry into the next. The child prints its result as one
 * JSON line; its stderr is passed through.
 */
export function runIngestInChild(opts: ChildIngestOptions): IngestResult {
  const args = [
    ...DEVICE_NODE_FLAGS,
    fileURLToPath(import.meta.url),
    '--child',
    ...['--flavor', opts.flavor, '--records', String(opts.records), '--batch', String(opts.batch), '--sample-at', opts.sampleAt.join(',')],
  ];
  const env = { ...process.env };
  if (opts.glibcMalloc === true) for (const name of Object.keys(DAEMON_MALLOC_ENV)) delete env[name];
  else Object.assign(env, DAEMON_MALLOC_ENV);
  const child = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', env, maxBuffer: 16 * 1024 * 1024 });
  if (child.status !== 0) throw new Error(`ingest child (${opts.flavor}) exited with ${child.status ?? child.signal}`);
  const result: IngestResult = JSON.parse(child.stdout.trim().split('\n').at(-1) ?? '');
  return result;
}

const KiB_PER_MiB = 1024;

/** `a / b` of two samples' field, in MiB. */
function fromTo(a: MemorySample | undefined, b: MemorySample | undefined, kib: (m: MemorySample) => number): string {
  const f = (m: MemorySample | undefined): string => (m === undefined ? '-' : (kib(m) / KiB_PER_MiB).toFixed(1));
  return `${f(a)} / ${f(b)}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      records: { type: 'string' },
      batch: { type: 'string' },
      flavor: { type: 'string' },
      quick: { type: 'boolean' },
      child: { type: 'boolean' },
      'sample-at': { type: 'string' },
      'glibc-malloc': { type: 'boolean' },
      'cycle-spans': { type: 'string' },
    },
  });
  const records = Number(values.records ?? (values.quick === true ? 100_000 : 1_000_000));
  const batch = Number(values.batch ?? 5000);
  const sampleAt = values['sample-at']?.split(',').map(Number) ?? [10_000, records / 10, records / 2, records];
  const flavors: ('n' | 'staged')[] = values.flavor === 'n' || values.flavor === 'staged' ? [values.flavor] : ['n', 'staged'];
  if (values.child === true) {
    const flavor = flavors[0] ?? 'n';
    const result = await runIngest({ records, batch, flavor, sampleAt, cycleSpansPath: values['cycle-spans'] });
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const machine: MachineDescription = describeMachine([]);
  const runs: IngestResult[] = [];
  for (const flavor of flavors) {
    process.stderr.write(`ingest: ${records} records, flavour ${flavor}...\n`);
    runs.push(runIngestInChild({ records, batch, flavor, sampleAt, glibcMalloc: values['glibc-malloc'] }));
  }
  for (const r of runs) process.stderr.write(`memory (${r.flavor}): ${JSON.stringify(r.memory)}\n`);
  const command = `node dist/bench/ingest.js ${process.argv.slice(2).join(' ')}`.trim();
  const env = values['glibc-malloc'] === true ? {} : DAEMON_MALLOC_ENV;
  const out = { bench: 'ingest', date: new Date().toISOString(), machine, command, nodeFlags: DEVICE_NODE_FLAGS, env, tpm: 'software (hw/soft-tpm.ts)', runs };
  mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(REPO_ROOT, 'bench', 'results', 'ingest.json'), `${JSON.stringify(out, null, 2)}\n`);
  const lines = [
    '| flavour | records | records/s (collector; goal ≥ 150,000) | CPU µs/record (goal ≤ 6.7) | of which main thread | CPU µs/record after the first sample (warm) | restart to first cycle ms | RSS MiB (goal ≤ 64) @10k / end | RssAnon MiB @10k / end (goal ≤ 24) | RssFile MiB @10k / end | of which LevelDB tables | heap MiB @10k / end | flash B/record (raw) | write amp. (goal ≤ 1.3) | lock hold ms p50/p99/max | kernel list at end |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...runs.map((r) => {
      const at10k = r.memory.find((m) => m.records >= 10_000);
      const end = r.memory.at(-1);
      const h = r.writerLockHoldMs;
      const rss = fromTo(at10k, end, (m) => m.rssAnonKiB + m.rssFileKiB + m.rssShmemKiB);
      const anon = fromTo(at10k, end, (m) => m.rssAnonKiB);
      const file = fromTo(at10k, end, (m) => m.rssFileKiB);
      const ldb = fromTo(at10k, end, (m) => m.ldbKiB);
      return `| ${r.flavor} | ${r.records} | ${r.recordsPerSecond} | ${r.cpuMicrosecondsPerRecord} | ${r.mainThreadCpuMicrosecondsPerRecord} | ${r.warmCpuMicrosecondsPerRecord} | ${r.restartToFirstCycleMs} | ${rss} | ${anon} | ${file} | ${ldb} | ${at10k?.heapUsedMiB ?? '-'} / ${end?.heapUsedMiB ?? '-'} | ${r.flashBytesPerRecord} (${r.rawRecordBytes}) | ${r.writeAmplification} | ${h.p50}/${h.p99}/${h.max} | ${r.kernelRecordsAtEnd} |`;
    }),
    '',
    // The first sample is taken with the collector open on an empty store, before any record: node,
    // imakeep's modules and an open store, idle. What the goals are measured against.
    ...runs.map((r) => {
      const floor = r.memory[0];
      const mib = (kib: number): string => (kib / KiB_PER_MiB).toFixed(1);
      return floor === undefined ? '' : `Node's floor (${r.flavor}, same process before the first record): RSS ${mib(floor.rssAnonKiB + floor.rssFileKiB + floor.rssShmemKiB)} MiB, RssAnon ${mib(floor.rssAnonKiB)} MiB, heap ${floor.heapUsedMiB} MiB`;
    }),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) await main();
