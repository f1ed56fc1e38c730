/**
 * Serving the log (issue 17's serving figures): imakeep's streamed log from the store against
 * Keylime's way of reading (rust-keylime `keylime/src/ima/measurement_list.rs`: the agent seeks to
 * a cached (entry, offset) pair, reads the whole unread tail of the ASCII file into one string,
 * counts lines, and sends it), both over a unix socket, on the same list, in one run.
 *
 * Printed: the issue's rows, each figure with its goal and the limit measured in the same run:
 * - the list served from the store (`openLog(...).bytes()` read to the end, HTTP excluded), MB per
 *   CPU-second of this process (user + system, all threads) and MB/s wall-clock;
 * - the limit: reading the store's segment file itself as the store reads it (1 MiB `preadv`
 *   runs into 64 KiB buffers), alone and with the SHA-256 every stored value is checked against
 *   (docs/store.md#segment-files);
 * - over HTTP (curl in its own process): MB/s, MB per CPU-second of the server (this process),
 *   time to first byte, the server's peak memory growth, and the Keylime-style server's figures
 *   and the ratio beside ours; Node's floor there: a bare `node:http` handler sending the segment
 *   file as it is read.
 *
 * It runs as the daemon does: glibc's `DAEMON_MALLOC_ENV` and the V8 flags of `DAEMON_NODE_FLAGS`
 * but the old-space cap (see NODE_FLAGS; the parent re-runs itself with them as `--child`).
 *
 *   npx tsc -p . && node dist/bench/serve.js [--quick]
 *
 * The Keylime-style server is given its best case: the exact byte offset of every requested entry
 * is cached (no newline counting to find it), so what remains is its per-request cost of holding
 * the tail in memory. Writes bench/results/serve.json.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { execFile, spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DAEMON_MALLOC_ENV, DAEMON_NODE_FLAGS } from '../src/daemon/index.js';
import { formatAsciiLineBytes } from '../src/ima/index.js';
import { openLog, startApiServer } from '../src/serve/index.js';
import { openStore, type ImaStore } from '../src/store/index.js';
import { SEGMENTS_DIRECTORY } from '../src/testing/index.js';
import { fillStore } from './_stored.js';
import { describeMachine, machineLine } from './_machine.js';

const quick = process.argv.includes('--quick');
const RECORDS = quick ? 40_000 : 200_000;
const RUNS = quick ? 3 : 5;
/** In-process reads of the whole list, after two to warm up (JIT, page cache): more than the HTTP runs, they are cheap. */
const STORE_RUNS = quick ? 5 : 9;

/** The goals (MB/s). */
const GOAL_BINARY = 500;
const GOAL_ASCII = 150;

/** One request's figures. */
interface Sample {
  readonly ttfbMs: number;
  readonly totalMs: number;
  readonly bytes: number;
  /** CPU time of this process (the server; user + system, all threads) during the request. */
  readonly serverCpuMs: number;
  /** Peak growth of heapUsed + arrayBuffers of the server process during the request. */
  readonly peakMemoryMiB: number;
}

/** Median of each figure over the runs. */
interface Case {
  readonly server: 'imakeep' | 'keylime-style' | 'segment-file';
  readonly format: 'binary' | 'ascii';
  readonly from: number;
  readonly bytes: number;
  readonly ttfbMs: number;
  readonly totalMs: number;
  readonly mbPerS: number;
  readonly mbPerServerCpuS: number;
  readonly peakMemoryMiB: number;
}

/** A rate measured in this process: MB per CPU-second and MB/s wall-clock, medians of the runs. */
interface Rate {
  readonly bytes: number;
  readonly mbPerCpuS: number;
  readonly mbPerS: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const memory = (): number => {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
const cpuMs = (since?: NodeJS.CpuUsage): number => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
};

/**
 * Each of `runs` (which return the bytes they went through) twice to warm up, then STORE_RUNS
 * times, taking turns (the machine's load then weighs on each alike): the medians of MB per
 * CPU-second and MB/s of each.
 */
async function rates<K extends string>(runs: Record<K, () => Promise<number>>): Promise<Record<K, Rate>> {
  const names = Object.keys(runs) as K[];
  const samples = new Map(names.map((name) => [name, { bytes: 0, perCpu: [] as number[], perWall: [] as number[] }]));
  for (let i = -2; i < STORE_RUNS; i++) {
    for (const name of names) {
      const cpu = process.cpuUsage();
      const t0 = performance.now();
      const bytes = await runs[name]();
      const wallMs = performance.now() - t0;
      const sample = samples.get(name);
      if (i < 0 || sample === undefined) continue;
      sample.bytes = bytes;
      sample.perCpu.push(bytes / 1e3 / cpuMs(cpu));
      sample.perWall.push(bytes / 1e3 / wallMs);
    }
  }
  const out = {} as Record<K, Rate>;
  for (const [name, s] of samples) out[name] = { bytes: s.bytes, mbPerCpuS: Math.round(median(s.perCpu)), mbPerS: Math.round(median(s.perWall)) };
  return out;
}

/** The whole list of the current boot from the store (`openLog(...).bytes()`), HTTP excluded: its bytes. */
async function serveFromStore(store: ImaStore, format: 'binary' | 'ascii'): Promise<number> {
  let bytes = 0;
  for await (const part of (await openLog({ store }, { format })).bytes()) bytes += part.length;
  return bytes;
}

/**
 * The limit under serving from the store: the segment file read front to back as the store reads
 * it (1 MiB `preadv` runs into 64 KiB buffers, a new buffer per value), and with the SHA-256 of
 * each 64 KiB the store checks every value against. Its bytes.
 */
async function readSegment(path: string, hashed: boolean): Promise<number> {
  const file = await open(path, 'r');
  try {
    let at = 0;
    for (;;) {
      const buffers = Array.from({ length: 16 }, () => Buffer.allocUnsafe(64 * 1024));
      const { bytesRead } = await file.readv(buffers, at);
      if (hashed) for (const b of buffers) createHash('sha256').update(b).digest();
      at += bytesRead;
      if (bytesRead < 16 * 64 * 1024) return at;
    }
  } finally {
    await file.close();
  }
}

/**
 * The segment-file limits, measured in a process of their own (node, the daemon's flags, nothing
 * else loaded): in this process, after building the fixtures, the same reads ran 5-10x slower
 * than alone, below the serving that includes them.
 */
function segmentLimits(path: string): { segmentRead: Rate; segmentReadChecked: Rate } {
  const run = spawnSync(process.execPath, [...NODE_FLAGS, process.argv[1] ?? '', '--segment-limits', path, ...(quick ? ['--quick'] : [])], {
    encoding: 'utf8',
    env: { ...process.env, ...DAEMON_MALLOC_ENV },
  });
  if (run.status !== 0) throw new Error(`segment limits: ${run.stderr}`);
  return JSON.parse(run.stdout) as { segmentRead: Rate; segmentReadChecked: Rate };
}

/**
 * GET over a unix socket by curl, a client in its own process writing to /dev/null: what is
 * measured is the server (this process), not a client sharing its event loop. curl's own
 * timings; this process's CPU time and memory while the request runs.
 */
function fetchTimed(socket: string, path: string): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const base = memory();
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, memory())), 5);
    const args = ['-sS', '--fail', '--unix-socket', socket, '-o', '/dev/null', '-w', '%{time_starttransfer} %{time_total} %{size_download}', `http://imakeep${path}`];
    let cpu: NodeJS.CpuUsage | undefined;
    execFile('curl', args, (err, stdout) => {
      const serverCpuMs = cpuMs(cpu);
      clearInterval(sampler);
      if (err !== null) return reject(err);
      const [ttfb, total, bytes] = stdout.trim().split(' ').map(Number) as [number, number, number];
      resolve({ ttfbMs: ttfb * 1000, totalMs: total * 1000, bytes, serverCpuMs, peakMemoryMiB: (peak - base) / 2 ** 20 });
    });
    // From here: spawning curl (fork and exec, in this process) is the client's cost, not the server's.
    cpu = process.cpuUsage();
  });
}

/** A store holding `n` records in 64 KiB chunks, and the same list as an ASCII file with entry offsets. */
async function buildFixtures(dir: string, n: number): Promise<{ store: ImaStore; asciiPath: string; offsets: Map<number, number> }> {
  const store = await openStore(join(dir, 'store'));
  const asciiPath = join(dir, 'ascii_runtime_measurements');
  const ascii = createWriteStream(asciiPath);
  const offsets = new Map<number, number>();
  const wanted = new Set([0, Math.floor(n / 2), n - 1000]);
  let offset = 0;
  await fillStore(store, 'bench-serve', n, async (record, i) => {
    if (wanted.has(i)) offsets.set(i, offset);
    const line = formatAsciiLineBytes(record);
    offset += line.length;
    if (!ascii.write(line)) await new Promise<void>((r) => ascii.once('drain', () => r()));
  });
  await new Promise<void>((r) => ascii.end(r));
  return { store, asciiPath, offsets };
}

/**
 * Node's floor for serving the stored SHA-1 list over HTTP: a bare `node:http` handler that reads
 * the segment file as the store does (1 MiB `preadv` runs into 64 KiB buffers) and writes each
 * buffer to the response with backpressure; no LevelDB, no check, no list framing.
 */
async function startSegmentFloor(socket: string, path: string): Promise<() => Promise<void>> {
  const server = createServer((_req, res) => {
    void (async () => {
      const file = await open(path, 'r');
      try {
        res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
        for (let at = 0, more = true; more; ) {
          const buffers = Array.from({ length: 16 }, () => Buffer.allocUnsafe(64 * 1024));
          const { bytesRead } = await file.readv(buffers, at);
          at += bytesRead;
          more = bytesRead === 16 * 64 * 1024;
          for (let i = 0, left = bytesRead; left > 0; i++, left -= 64 * 1024) {
            const part = buffers[i]?.subarray(0, Math.min(left, 64 * 1024)) ?? Buffer.alloc(0);
            if (!res.write(part)) await new Promise((r) => res.once('drain', r));
          }
        }
        res.end();
      } finally {
        await file.close();
      }
    })();
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return () => new Promise((r) => server.close(() => r()));
}

/**
 * The Keylime agent's read path, per request: seek to the cached offset of the entry, read the rest
 * of the file into one string, count its lines, send it (rust-keylime `MeasurementList::read`).
 */
async function startKeylimeStyle(socket: string, asciiPath: string, offsets: Map<number, number>): Promise<() => Promise<void>> {
  const server = createServer((req, res) => {
    void (async () => {
      const entry = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('entry'));
      const file = await open(asciiPath, 'r');
      try {
        const size = (await file.stat()).size;
        const start = offsets.get(entry) ?? 0;
        const buf = Buffer.alloc(size - start);
        await file.read(buf, 0, buf.length, start);
        const text = buf.toString('utf8');
        let lines = 0;
        for (let at = text.indexOf('\n'); at >= 0; at = text.indexOf('\n', at + 1)) lines++;
        res.writeHead(200, { 'Content-Type': 'text/plain', 'X-Lines': String(lines) });
        res.end(text);
      } finally {
        await file.close();
      }
    })();
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return () => new Promise((r) => server.close(() => r()));
}

async function measure(server: Case['server'], format: Case['format'], from: number, socket: string, path: string): Promise<Case> {
  await fetchTimed(socket, path); // warm-up (page cache, JIT)
  const samples: Sample[] = [];
  for (let i = 0; i < RUNS; i++) samples.push(await fetchTimed(socket, path));
  const totalMs = median(samples.map((s) => s.totalMs));
  const bytes = samples[0]?.bytes ?? 0;
  return {
    server,
    format,
    from,
    bytes,
    ttfbMs: Number(median(samples.map((s) => s.ttfbMs)).toFixed(2)),
    totalMs: Number(totalMs.toFixed(1)),
    mbPerS: Number((bytes / 1e6 / (totalMs / 1000)).toFixed(1)),
    mbPerServerCpuS: Math.round(median(samples.map((s) => bytes / 1e3 / s.serverCpuMs))),
    peakMemoryMiB: Number(median(samples.map((s) => s.peakMemoryMiB)).toFixed(1)),
  };
}

/** `12 MB/CPU-s, 34 MB/s`. */
function rateText(r: Rate): string {
  return `${r.mbPerCpuS.toLocaleString('en-US')} MB/CPU-s, ${r.mbPerS.toLocaleString('en-US')} MB/s`;
}

async function child(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-bench-serve-'));
  try {
    process.stderr.write(`building ${RECORDS} records...\n`);
    const { store, asciiPath, offsets } = await buildFixtures(dir, RECORDS);
    const load = [loadavg()[0] ?? NaN];
    const segment = join(dir, 'store', SEGMENTS_DIRECTORY, `${'0'.padStart(10, '0')}.seg`);
    const fromStore = {
      ...(await rates({ binary: () => serveFromStore(store, 'binary'), ascii: () => serveFromStore(store, 'ascii') })),
      ...segmentLimits(segment),
    };
    const ours = join(dir, 'imakeep.sock');
    const theirs = join(dir, 'keylime.sock');
    const floorSocket = join(dir, 'floor.sock');
    const api = await startApiServer({ store }, { socket: ours });
    const stopKeylime = await startKeylimeStyle(theirs, asciiPath, offsets);
    const stopFloor = await startSegmentFloor(floorSocket, segment);
    const cases: Case[] = [];
    try {
      cases.push(await measure('segment-file', 'binary', 0, floorSocket, '/'));
      for (const from of [0, Math.floor(RECORDS / 2), RECORDS - 1000]) {
        cases.push(await measure('imakeep', 'binary', from, ours, `/v1/log?from=${from}`));
        cases.push(await measure('imakeep', 'ascii', from, ours, `/v1/log?from=${from}&format=ascii`));
        cases.push(await measure('keylime-style', 'ascii', from, theirs, `/?entry=${from}`));
      }
    } finally {
      await api.close();
      await stopKeylime();
      await stopFloor();
      await store.close();
    }
    load.push(loadavg()[0] ?? NaN);
    const machine = describeMachine([]);
    const asciiSame = cases.filter((c) => c.format === 'ascii' && c.from === 0);
    const httpOf = (server: Case['server'], format: Case['format']): Case | undefined => cases.find((c) => c.server === server && c.format === format && c.from === 0);
    const result = {
      machine,
      records: RECORDS,
      runs: RUNS,
      storeRuns: STORE_RUNS,
      nodeFlags: NODE_FLAGS,
      mallocEnv: DAEMON_MALLOC_ENV,
      loadAverage: load.map((l) => Number(l.toFixed(1))),
      fromStore,
      cases,
      note: 'Medians. fromStore: openLog().bytes() read to the end in this process (HTTP excluded) and the segment file read alone; MB per CPU-second of this process. Client: curl in its own process. mbPerServerCpuS: bytes per CPU-second of the server process. peakMemoryMiB: growth of heapUsed+arrayBuffers of the server process.',
      keylimeOverImakeepPeakMemoryFromZero: Number(((asciiSame[1]?.peakMemoryMiB ?? NaN) / (asciiSame[0]?.peakMemoryMiB ?? NaN)).toFixed(1)),
    };
    const out = join(process.cwd(), 'bench', 'results');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'serve.json'), `${JSON.stringify(result, null, 2)}\n`);
    const binaryHttp = httpOf('imakeep', 'binary');
    const asciiHttp = httpOf('imakeep', 'ascii');
    const keylimeHttp = httpOf('keylime-style', 'ascii');
    const floorHttp = httpOf('segment-file', 'binary');
    const w = (line: string): boolean => process.stdout.write(`${line}\n`);
    w(`\n### serve from the store: issue 17's figures, ${RECORDS} records (${(fromStore.binary.bytes / 1e6).toFixed(1)} MB binary, ${(fromStore.ascii.bytes / 1e6).toFixed(1)} MB ASCII), medians of ${STORE_RUNS} (${machineLine(machine)}; load ${load.map((l) => l.toFixed(1)).join(' -> ')}; ${NODE_FLAGS.join(' ')})\n`);
    w('| figure | this run | the limit in the same run | goal |');
    w('|---|---:|---:|---:|');
    w(`| serve the SHA-1 binary list from the store (\`openLog().bytes()\`, HTTP excluded) | ${rateText(fromStore.binary)} | the segment file read alone: ${rateText(fromStore.segmentRead)}; read + SHA-256 check of every value: ${rateText(fromStore.segmentReadChecked)} | ≥ ${GOAL_BINARY} MB/s |`);
    w(`| serve the ASCII list from the store (same) | ${rateText(fromStore.ascii)} | the Keylime-style file read over HTTP: ${keylimeHttp?.mbPerS ?? NaN} MB/s, ${keylimeHttp?.mbPerServerCpuS ?? NaN} MB/server-CPU-s | ≥ ${GOAL_ASCII} MB/s |`);
    w(`| the SHA-1 binary list over HTTP (curl, unix socket, from 0) | ${binaryHttp?.mbPerServerCpuS ?? NaN} MB/server-CPU-s, ${binaryHttp?.mbPerS ?? NaN} MB/s | a bare node:http handler sending the segment file as read: ${floorHttp?.mbPerServerCpuS ?? NaN} MB/server-CPU-s, ${floorHttp?.mbPerS ?? NaN} MB/s | ≥ ${GOAL_BINARY} MB/s |`);
    w(`| the ASCII list over HTTP (same) | ${asciiHttp?.mbPerServerCpuS ?? NaN} MB/server-CPU-s, ${asciiHttp?.mbPerS ?? NaN} MB/s; ÷ Keylime-style: ${((asciiHttp?.mbPerS ?? NaN) / (keylimeHttp?.mbPerS ?? NaN)).toFixed(2)}x | Keylime-style: ${keylimeHttp?.mbPerS ?? NaN} MB/s | ≥ ${GOAL_ASCII} MB/s |`);
    w(`\n### serve over HTTP: ${RECORDS} records, median of ${RUNS}\n`);
    w('| server | format | from | MB | MB/s | MB/server-CPU-s | first byte ms | total ms | peak memory MiB |\n|---|---|---:|---:|---:|---:|---:|---:|---:|');
    for (const c of cases) {
      w(`| ${c.server} | ${c.format} | ${c.from} | ${(c.bytes / 1e6).toFixed(1)} | ${c.mbPerS} | ${c.mbPerServerCpuS} | ${c.ttfbMs} | ${c.totalMs} | ${c.peakMemoryMiB} |`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The daemon's V8 flags but its old-space cap: the Keylime-style server, in this process, holds a
 * whole tail as one string (77 MB of ASCII at 200k records), past the daemon's 32 MB. The young
 * generation's size, what sets how often serving's garbage is scavenged, stays the daemon's.
 */
const NODE_FLAGS = DAEMON_NODE_FLAGS.filter((flag) => !flag.startsWith('--max-old-space-size'));

/** Re-runs this file as the daemon runs (its V8 flags and malloc settings), output passed through. */
function asDaemon(): void {
  const args = [...NODE_FLAGS, process.argv[1] ?? '', '--child', ...process.argv.slice(2)];
  const run = spawnSync(process.execPath, args, { stdio: 'inherit', env: { ...process.env, ...DAEMON_MALLOC_ENV } });
  process.exitCode = run.status ?? 1;
}

const limitsOf = process.argv.indexOf('--segment-limits');
if (limitsOf >= 0) {
  const path = process.argv[limitsOf + 1] ?? '';
  process.stdout.write(JSON.stringify(await rates({ segmentRead: () => readSegment(path, false), segmentReadChecked: () => readSegment(path, true) })));
} else if (process.argv.includes('--child')) await child();
else asDaemon();
