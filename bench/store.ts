/**
 * Store bench: which LevelDB options suit a small device (src/store/level.ts DEVICE_LEVEL_OPTIONS),
 * and chunk values in segment files against values in LevelDB (src/store/segments.ts).
 *
 * Each setting runs in its own process (clean peak RSS and I/O counters): a realistic chunk stream
 * (ImaWorkload `mixed` records, PcrReplay of sha1+sha256, ChunkBuilder 64 KiB chunks, each
 * committed with `appendChunk`, i.e. a synced batch), then one full read with `records()`.
 * Reported: records/s of the whole ingest and of the store calls alone, read records/s, CPU time
 * (user + system, all threads: the machine is shared, so rates swing and CPU is the figure to
 * compare) per record of the store calls and of the read, the list served from the store
 * (`openLog(...).bytes()`, HTTP excluded: SHA-1 binary and ASCII, MB per CPU-second), peak RSS
 * (VmHWM), block-layer bytes written (/proc/self/io write_bytes) per value byte, disk use.
 *
 *   node dist/bench/store.js [records]                 (default 300000, ~48 MB of records per setting)
 *   node dist/bench/store.js --run SETTING records     (one setting, JSON)
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PcrReplay } from '../src/ima/index.js';
import { Level } from 'level';
import { ChunkBuilder, ImaStore, openStore, type LevelTuning } from '../src/store/index.js';
import { DAEMON_NODE_FLAGS } from '../src/daemon/index.js';
import { openLog } from '../src/serve/index.js';
import { ImaWorkload, DEVICE_LEVEL_OPTIONS } from '../src/testing/index.js';

/** LevelDB options, and where chunk values go: segment files (`openStore`) or LevelDB itself (schema 1's layout). */
interface Setting extends LevelTuning {
  readonly valuesInLevel?: true;
  /** classic-level `compression` (Snappy, on by default). */
  readonly compression?: boolean;
}

const SETTINGS: Record<string, Setting> = {
  'values in LevelDB, level defaults': { valuesInLevel: true, cacheSize: 8 << 20, writeBufferSize: 4 << 20, maxOpenFiles: 1000, blockSize: 4096 },
  'values in LevelDB, device': { valuesInLevel: true, ...DEVICE_LEVEL_OPTIONS },
  'values in LevelDB, device, no compression': { valuesInLevel: true, ...DEVICE_LEVEL_OPTIONS, compression: false },
  'values in LevelDB, device, 4 MiB write buffer': { valuesInLevel: true, ...DEVICE_LEVEL_OPTIONS, writeBufferSize: 4 << 20 },
  'values in LevelDB, device, 4 MiB write buffer, 2 MiB tables': { valuesInLevel: true, ...DEVICE_LEVEL_OPTIONS, writeBufferSize: 4 << 20, maxFileSize: 2 << 20 },
  'segment files, device': DEVICE_LEVEL_OPTIONS,
};

/** The store as `setting` says: `openStore`, or LevelDB alone with the same options (chunk values inline). */
function openWith(setting: Setting, dir: string): Promise<ImaStore> {
  const { valuesInLevel, ...level } = setting;
  if (valuesInLevel !== true) return openStore(dir, { level });
  return ImaStore.open(new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view', ...level }));
}

function cpuSeconds(since?: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1e6;
}

/** The daemon's V8 flags on a small device (DAEMON_NODE_FLAGS: semi-space 1 MB is what bounds RSS, bench/ingest.ts). */

interface RunResult {
  readonly records: number;
  readonly chunks: number;
  readonly valueBytes: number;
  readonly ingestSeconds: number;
  readonly storeSeconds: number;
  readonly readSeconds: number;
  /** CPU time of this process (all threads) during the store calls / the read. */
  readonly storeCpuSeconds: number;
  readonly readCpuSeconds: number;
  /** MB of the list served per CPU-second (whole boot, one request each). */
  readonly serveBinaryMBPerCpuSecond: number;
  readonly serveAsciiMBPerCpuSecond: number;
  readonly peakRssKiB: number;
  /** Peaks of RssAnon (heap, malloc) and RssFile (binary, mmapped tables), sampled every 32 chunks / 8k records read. */
  readonly peakAnonKiB: number;
  readonly peakFileKiB: number;
  readonly writeBytes: number;
  readonly diskBytes: number;
}

function procField(file: string, name: string): number {
  const line = readFileSync(file, 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
  return Number((line ?? '0').replace(/[^0-9]/g, ''));
}

/** Running peaks of RssAnon and RssFile. */
class RssPeaks {
  anon = 0;
  file = 0;
  sample(): void {
    this.anon = Math.max(this.anon, procField('/proc/self/status', 'RssAnon'));
    this.file = Math.max(this.file, procField('/proc/self/status', 'RssFile'));
  }
}

function diskUse(dir: string): number {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).reduce((n, f) => {
    const stat = statSync(join(dir, f));
    return n + (stat.isFile() ? stat.size : 0);
  }, 0);
}

/** Serves the current boot's whole list from the store: MB per CPU-second. */
async function serveRate(store: ImaStore, format: 'binary' | 'ascii'): Promise<number> {
  const cpu = process.cpuUsage();
  let bytes = 0;
  for await (const part of (await openLog({ store }, { format })).bytes()) bytes += part.length;
  return Math.round(bytes / 1e6 / cpuSeconds(cpu));
}

/** One setting, in this process. */
async function run(setting: Setting, records: number, dir: string): Promise<RunResult> {
  const store = await openWith(setting, dir);
  const boot = await store.beginBoot({
    kernelBootId: 'bench',
    firstSeen: 0,
    resetCount: null,
    bankModes: { sha1: 'native', sha256: 'native' },
    endianness: 'le',
    template: 'ima-ng',
    templateHash: 'sha256',
  });
  const workload = new ImaWorkload({ seed: 7, template: 'mixed', violationRate: 0.001 });
  const replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' } });
  const builder = new ChunkBuilder(0);
  const writeBefore = procField('/proc/self/io', 'write_bytes');
  const peaks = new RssPeaks();
  let storeNs = 0n;
  let storeCpuSeconds = 0;
  let chunks = 0;
  let valueBytes = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < records; i++) {
    const record = workload.next();
    replay.extend(record);
    builder.add(record, 0);
    if (builder.shouldSeal(0) || i === records - 1) {
      const draft = builder.draft(replay.toState());
      const t = process.hrtime.bigint();
      const cpu = process.cpuUsage();
      const stored = await store.appendChunk(boot, draft);
      storeCpuSeconds += cpuSeconds(cpu);
      storeNs += process.hrtime.bigint() - t;
      builder.committed(draft);
      if (++chunks % 32 === 0) peaks.sample();
      valueBytes += stored.value.length;
    }
  }
  const ingestNs = process.hrtime.bigint() - start;
  await store.close();
  const writeBytes = procField('/proc/self/io', 'write_bytes') - writeBefore;
  const reader = await openWith(setting, dir);
  const readStart = process.hrtime.bigint();
  const readCpu = process.cpuUsage();
  let n = 0;
  for await (const r of reader.records(boot)) {
    n += r.index === n ? 1 : Number.NaN;
    if (n % 8192 === 0) peaks.sample();
  }
  const readNs = process.hrtime.bigint() - readStart;
  const readCpuSeconds = cpuSeconds(readCpu);
  const serveBinaryMBPerCpuSecond = await serveRate(reader, 'binary');
  const serveAsciiMBPerCpuSecond = await serveRate(reader, 'ascii');
  await reader.close();
  if (n !== records) throw new Error(`read ${n} of ${records} records`);
  return {
    records,
    chunks,
    valueBytes,
    ingestSeconds: Number(ingestNs) / 1e9,
    storeSeconds: Number(storeNs) / 1e9,
    readSeconds: Number(readNs) / 1e9,
    storeCpuSeconds,
    readCpuSeconds,
    serveBinaryMBPerCpuSecond,
    serveAsciiMBPerCpuSecond,
    peakRssKiB: procField('/proc/self/status', 'VmHWM'),
    peakAnonKiB: peaks.anon,
    peakFileKiB: peaks.file,
    writeBytes,
    diskBytes: diskUse(dir),
  };
}

async function main(): Promise<void> {
  const [mode, arg1, arg2] = process.argv.slice(2);
  if (mode === '--run' && arg1 !== undefined && arg2 !== undefined) {
    const setting = SETTINGS[arg1];
    if (setting === undefined) throw new Error(`unknown setting ${arg1}`);
    const dir = mkdtempSync(join(tmpdir(), 'imakeep-bench-store-'));
    try {
      process.stdout.write(JSON.stringify(await run(setting, Number(arg2), dir)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    return;
  }
  const records = Number(mode ?? 300_000);
  const k = (x: number): string => Math.round(x).toLocaleString('en-US');
  console.log(`store bench: ${k(records)} records, 64 KiB chunks, synced appendChunk, node ${process.version} ${DAEMON_NODE_FLAGS.join(' ')}`);
  console.log('| setting | chunks | ingest rec/s | store-only rec/s | read rec/s | store CPU µs/record | read CPU µs/record | serve MB/CPU-s binary / ASCII | peak RSS MB (anon + file) | writes ÷ value bytes | disk MB |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const name of Object.keys(SETTINGS)) {
    const child = spawnSync(process.execPath, [...DAEMON_NODE_FLAGS, process.argv[1] ?? '', '--run', name, String(records)], { encoding: 'utf8' });
    if (child.status !== 0) throw new Error(`${name}: ${child.stderr}`);
    const r = JSON.parse(child.stdout) as RunResult;
    console.log(
      `| ${name} | ${r.chunks} | ${k(r.records / r.ingestSeconds)} | ${k(r.records / r.storeSeconds)} | ${k(r.records / r.readSeconds)} | ` +
        `${((r.storeCpuSeconds / r.records) * 1e6).toFixed(2)} | ${((r.readCpuSeconds / r.records) * 1e6).toFixed(2)} | ` +
        `${r.serveBinaryMBPerCpuSecond} / ${r.serveAsciiMBPerCpuSecond} | ` +
        `${(r.peakRssKiB / 1024).toFixed(1)} (${(r.peakAnonKiB / 1024).toFixed(1)} + ${(r.peakFileKiB / 1024).toFixed(1)}) | ${(r.writeBytes / r.valueBytes).toFixed(2)} | ${(r.diskBytes / 1e6).toFixed(1)} |`,
    );
  }
}

await main();
