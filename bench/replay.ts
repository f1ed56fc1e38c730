/**
 * Replay bench: our streaming parse + PCR replay against evmctl on the same 1,000,000-record log.
 *
 * Generates a deterministic ima-ng SHA-1 binary list (ImaWorkload seed 2026, sha256 file hashes,
 * boot_aggregate of all-zero PCRs 0-9) in a temp dir, then times, each in its own process under
 * `/usr/bin/time -f %M` (peak RSS):
 *   - ours, one thread: createReadStream → BinaryListParser → PcrReplay {sha1, sha256 native}
 *     with SHA-1 template digest verification (what `imakeep replay` does);
 *   - ours, one worker thread per bank, each streaming the file itself (parsing is cheap,
 *     perf-baseline.md §4: 32 M records/s);
 *   - `evmctl ima_measurement --pcrs sha1,FILE --pcrs sha256,FILE LOG` (Debian ima-evm-utils),
 *     given the PCR values our replay computed; it must print that they match;
 *   - ours, one thread, on the first 100,000 records: peak RSS must not grow with the log;
 *   - ours, one thread, 100k and 1M records with the daemon's small-device V8 flags
 *     (`--max-semi-space-size=1 --max-old-space-size=32`, as bench/store.ts), which show the RSS
 *     floor: with default flags V8 lets garbage (hash output Buffers) pile up before collecting it,
 *     more so on a loaded machine, so default-flag RSS says little about what is retained.
 * records/s are over process wall time (Node start-up included, as for evmctl); the replay's own
 * time is in the JSON (`replaySeconds`). Writes bench/results/replay.json.
 *
 * Worker threads: one worker per bank halves the hashing per thread, but on this 2-core machine,
 * shared with other jobs, it measured slower than one thread (results below, `fasterOfOurs`), and
 * the collector replays a chunk at a time on a small device; so `imakeep replay` and PcrReplay
 * stay single-threaded, and the bench keeps both figures.
 *
 *   node dist/bench/replay.js [records] [repeats]      (default 1000000 3)
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, mkdtempSync, rmSync, statSync, writeFileSync, openSync, writeSync, closeSync, mkdirSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem, type as osType, release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, workerData, parentPort } from 'node:worker_threads';
import {
  BinaryListParser,
  ImaWorkload,
  PcrReplay,
  bootAggregate,
  encodeBinaryRecord,
  toHex,
  type BankName,
} from '../src/ima/index.js';

const SELF = fileURLToPath(import.meta.url);
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CHUNK_BYTES = 256 * 1024;
const BANKS_REPLAYED: readonly BankName[] = ['sha1', 'sha256'];

interface ReplayOutcome {
  readonly records: number;
  readonly seconds: number;
  readonly pcr10: Partial<Record<BankName, string>>;
}

/** Streams FILE through the parser into a replay of `banks`; the SHA-1 digests are verified if sha1 is among them. */
async function replayFile(file: string, banks: readonly BankName[]): Promise<ReplayOutcome> {
  const started = process.hrtime.bigint();
  const parser = new BinaryListParser();
  const replay = new PcrReplay({ banks: Object.fromEntries(banks.map((b) => [b, 'native'])), verifyDigests: banks.includes('sha1') });
  for await (const chunk of createReadStream(file, { highWaterMark: CHUNK_BYTES })) {
    if (!(chunk instanceof Uint8Array)) throw new Error('expected bytes');
    for (const rec of parser.push(chunk)) replay.extend(rec);
  }
  parser.end();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { records: replay.recordCount, seconds, pcr10: Object.fromEntries(banks.map((b) => [b, toHex(replay.value(b, 10))])) };
}

/** One worker thread per bank, each streaming the whole file. */
async function replayWithWorkers(file: string): Promise<ReplayOutcome> {
  const started = process.hrtime.bigint();
  const results = await Promise.all(
    BANKS_REPLAYED.map(
      (bank) =>
        new Promise<ReplayOutcome>((resolve, reject) => {
          const worker = new Worker(SELF, { workerData: { file, bank } });
          worker.once('message', (m: ReplayOutcome) => resolve(m));
          worker.once('error', reject);
        }),
    ),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { records: results[0]?.records ?? 0, seconds, pcr10: Object.assign({}, ...results.map((r) => r.pcr10)) };
}

/** Writes the first `count` records of the workload to `file` and the first `prefix` to `prefixFile`. */
function generateLog(file: string, count: number, prefixFile: string, prefix: number): void {
  const aggregate = bootAggregate(Array.from({ length: 10 }, () => new Uint8Array(32)), 'sha256');
  const workload = new ImaWorkload({ seed: 2026, template: 'ima-ng', bootAggregate: aggregate });
  const fd = openSync(file, 'w');
  const prefixFd = openSync(prefixFile, 'w');
  let batch: Uint8Array[] = [];
  const flush = (written: number) => {
    const bytes = Buffer.concat(batch);
    writeSync(fd, bytes);
    if (written <= prefix) writeSync(prefixFd, bytes);
    batch = [];
  };
  for (let i = 1; i <= count; i++) {
    batch.push(encodeBinaryRecord(workload.next()));
    if (i % 10_000 === 0 || i === count || i === prefix) flush(i);
  }
  closeSync(fd);
  closeSync(prefixFd);
}

/** Writes `PCR-NN: hex` files (the format `evmctl --pcrs` reads) with PCR 10 set, the others zero. */
function writePcrFile(file: string, bank: BankName, pcr10: string): void {
  const size = bank === 'sha1' ? 20 : 32;
  const lines = Array.from({ length: 24 }, (_, i) => `PCR-${String(i).padStart(2, '0')}: ${i === 10 ? pcr10 : '00'.repeat(size)}`);
  writeFileSync(file, `${lines.join('\n')}\n`);
}

interface Measured {
  readonly seconds: number;
  readonly peakRssKiB: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command under /usr/bin/time -f %M; wall seconds measured here unless the child reports its own. */
function timed(cmd: string, args: readonly string[]): Measured {
  const started = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', 'peak-rss-kib %M', cmd, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const rss = /peak-rss-kib (\d+)\s*$/.exec(r.stderr);
  if (r.status !== 0 || rss === null) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return { seconds, peakRssKiB: Number(rss[1]), stdout: r.stdout, stderr: r.stderr.slice(0, rss.index) };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

interface RunSummary {
  readonly name: string;
  readonly records: number;
  /** Median process wall time over the repeats. */
  readonly seconds: number;
  readonly secondsAll: readonly number[];
  /** Ours: median of the child's own parse + replay time. */
  readonly replaySeconds?: number;
  readonly recordsPerSecond: number;
  /** Largest peak RSS over the repeats. */
  readonly peakRssKiB: number;
}

/** The daemon's V8 flags on a small device (bench/store.ts DEVICE_NODE_FLAGS). */
const DEVICE_NODE_FLAGS = ['--max-semi-space-size=1', '--max-old-space-size=32'];

function runOurs(
  name: string,
  mode: 'single' | 'workers',
  file: string,
  repeats: number,
  nodeFlags: readonly string[] = [],
): { summary: RunSummary; outcome: ReplayOutcome } {
  const outcomes: ReplayOutcome[] = [];
  const runs: Measured[] = [];
  for (let i = 0; i < repeats; i++) {
    const m = timed(process.execPath, [...nodeFlags, SELF, '--run', mode, file]);
    outcomes.push(JSON.parse(m.stdout) as ReplayOutcome);
    runs.push(m);
  }
  const first = outcomes[0];
  if (first === undefined) throw new Error('no run');
  return { summary: summarize(name, first.records, runs, median(outcomes.map((o) => o.seconds))), outcome: first };
}

function summarize(name: string, records: number, runs: readonly Measured[], replaySeconds?: number): RunSummary {
  const secondsAll = runs.map((m) => m.seconds);
  const seconds = median(secondsAll);
  return {
    name,
    records,
    seconds,
    secondsAll,
    ...(replaySeconds === undefined ? {} : { replaySeconds }),
    recordsPerSecond: records / seconds,
    peakRssKiB: Math.max(...runs.map((m) => m.peakRssKiB)),
  };
}

async function orchestrate(count: number, repeats: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-bench-replay-'));
  try {
    const log = join(dir, 'binary_runtime_measurements');
    const small = join(dir, 'binary_runtime_measurements.100k');
    const prefix = Math.min(100_000, count);
    const t = process.hrtime.bigint();
    generateLog(log, count, small, prefix);
    const generateSeconds = Number(process.hrtime.bigint() - t) / 1e9;
    process.stderr.write(`generated ${count} records, ${statSync(log).size} bytes in ${generateSeconds.toFixed(1)} s\n`);

    const single = runOurs(`imakeep, 1 thread (${count})`, 'single', log, repeats);
    const workers = runOurs(`imakeep, worker per bank (${count})`, 'workers', log, repeats);
    const singleSmall = runOurs(`imakeep, 1 thread (${prefix})`, 'single', small, repeats);
    const deviceSmall = runOurs(`imakeep, 1 thread, device V8 flags (${prefix})`, 'single', small, repeats, DEVICE_NODE_FLAGS);
    const device = runOurs(`imakeep, 1 thread, device V8 flags (${count})`, 'single', log, repeats, DEVICE_NODE_FLAGS);
    if (JSON.stringify(workers.outcome.pcr10) !== JSON.stringify(single.outcome.pcr10)) throw new Error('worker replay differs');

    const pcrFiles = BANKS_REPLAYED.map((bank) => {
      const f = join(dir, `pcr-${bank}.txt`);
      writePcrFile(f, bank, single.outcome.pcr10[bank] ?? '');
      return `${bank},${f}`;
    });
    const evmArgs = ['ima_measurement', ...pcrFiles.flatMap((p) => ['--pcrs', p]), log];
    const evmRuns: Measured[] = [];
    for (let i = 0; i < repeats; i++) {
      const m = timed('evmctl', evmArgs);
      const out = m.stdout + m.stderr;
      if (!out.includes('Matched per TPM bank calculated digest(s).')) throw new Error(`evmctl did not match: ${out.slice(-1000)}`);
      evmRuns.push(m);
    }
    const evmctl = summarize(`evmctl ima_measurement (${count})`, count, evmRuns);
    const runs = [single.summary, workers.summary, evmctl, singleSmall.summary, device.summary, deviceSmall.summary];
    const faster = workers.summary.seconds < single.summary.seconds ? 'workers' : 'single';
    const ours = faster === 'workers' ? workers.summary : single.summary;
    const evmVersion = spawnSync('evmctl', ['--version'], { encoding: 'utf8' }).stdout.trim();
    const results = {
      date: new Date().toISOString(),
      command: `node dist/bench/replay.js ${count} ${repeats}`,
      machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30 * 10) / 10, node: process.version, os: `${osType()} ${release()}`, evmctl: evmVersion },
      log: { records: count, bytes: statSync(log).size, template: 'ima-ng', fileHash: 'sha256', generateSeconds },
      pcr10: single.outcome.pcr10,
      runs,
      fasterOfOurs: faster,
      oursOverEvmctl: ours.recordsPerSecond / evmctl.recordsPerSecond,
      rssGrowthKiB: single.summary.peakRssKiB - singleSmall.summary.peakRssKiB,
      rssGrowthDeviceFlagsKiB: device.summary.peakRssKiB - deviceSmall.summary.peakRssKiB,
      loadAverage: loadavg(),
    };
    mkdirSync(join(REPO, 'bench/results'), { recursive: true });
    writeFileSync(join(REPO, 'bench/results/replay.json'), `${JSON.stringify(results, null, 2)}\n`);
    const rows = runs.map((r) => `| ${r.name} | ${r.seconds.toFixed(2)} | ${Math.round(r.recordsPerSecond).toLocaleString('en-US')} | ${(r.peakRssKiB / 1024).toFixed(1)} |`);
    process.stdout.write(
      [
        `machine: ${results.machine.cpu}, ${results.machine.cores} cores, node ${process.version}, ${evmVersion}`,
        `log: ${count} ima-ng records, ${(results.log.bytes / 1e6).toFixed(1)} MB; banks sha1 + sha256 (native), SHA-1 digests verified`,
        '',
        '| run | wall seconds (median) | records/s | peak RSS MiB |',
        '| --- | ---: | ---: | ---: |',
        ...rows,
        '',
        `faster of ours: ${faster}; ours / evmctl = ${results.oursOverEvmctl.toFixed(2)}x records/s; peak RSS growth ${prefix} → ${count} records: ` +
          `${(results.rssGrowthKiB / 1024).toFixed(1)} MiB (default V8 flags), ${(results.rssGrowthDeviceFlagsKiB / 1024).toFixed(1)} MiB (device flags); ` +
          `load average ${results.loadAverage.map((l) => l.toFixed(2)).join(' ')}`,
        '',
      ].join('\n'),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (!isMainThread) {
    const data = workerData as { file: string; bank: BankName };
    parentPort?.postMessage(await replayFile(data.file, [data.bank]));
    return;
  }
  const args = process.argv.slice(2);
  if (args[0] === '--run') {
    const file = args[2] ?? '';
    const outcome = args[1] === 'workers' ? await replayWithWorkers(file) : await replayFile(file, BANKS_REPLAYED);
    process.stdout.write(`${JSON.stringify(outcome)}\n`);
    return;
  }
  await orchestrate(Number(args[0] ?? 1_000_000), Number(args[1] ?? 3));
}

await main();
