/**
 * Serving the log: imakeep's streamed log (stored chunks decoded one at a time) against Keylime's
 * way of reading (rust-keylime `keylime/src/ima/measurement_list.rs`: the agent seeks to a cached (entry, offset) pair, reads the whole
 * unread tail of the ASCII file into one string, counts lines, and sends it), both over a unix
 * socket, on the same list, in one run. Throughput, time to first byte, and the server's peak
 * memory growth during a request.
 *
 *   npx tsc -p . && node dist/bench/serve.js [--quick]
 *
 * The Keylime-style server is given its best case: the exact byte offset of every requested entry
 * is cached (no newline counting to find it), so what remains is its per-request cost of holding
 * the tail in memory. Writes bench/results/serve.json.
 */
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatAsciiLineBytes } from '../src/ima/index.js';
import { startApiServer } from '../src/serve/index.js';
import { openStore, type ImaStore } from '../src/store/index.js';
import { fillStore } from './_stored.js';
import { describeMachine, machineLine } from './_machine.js';

const quick = process.argv.includes('--quick');
const RECORDS = quick ? 40_000 : 200_000;
const RUNS = quick ? 3 : 5;

/** One request's figures. */
interface Sample {
  readonly ttfbMs: number;
  readonly totalMs: number;
  readonly bytes: number;
  /** Peak growth of heapUsed + arrayBuffers of the server process during the request. */
  readonly peakMemoryMiB: number;
}

/** Median of each figure over the runs. */
interface Case {
  readonly server: 'imakeep' | 'keylime-style';
  readonly format: 'binary' | 'ascii';
  readonly from: number;
  readonly bytes: number;
  readonly ttfbMs: number;
  readonly totalMs: number;
  readonly mbPerS: number;
  readonly peakMemoryMiB: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const memory = (): number => {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};

/**
 * GET over a unix socket by curl, a client in its own process writing to /dev/null: what is
 * measured is the server (this process), not a client sharing its event loop. curl's own
 * timings; this process's memory sampled while the request runs.
 */
function fetchTimed(socket: string, path: string): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const base = memory();
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, memory())), 5);
    const args = ['-sS', '--fail', '--unix-socket', socket, '-o', '/dev/null', '-w', '%{time_starttransfer} %{time_total} %{size_download}', `http://imakeep${path}`];
    execFile('curl', args, (err, stdout) => {
      clearInterval(sampler);
      if (err !== null) return reject(err);
      const [ttfb, total, bytes] = stdout.trim().split(' ').map(Number) as [number, number, number];
      resolve({ ttfbMs: ttfb * 1000, totalMs: total * 1000, bytes, peakMemoryMiB: (peak - base) / 2 ** 20 });
    });
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
    peakMemoryMiB: Number(median(samples.map((s) => s.peakMemoryMiB)).toFixed(1)),
  };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-bench-serve-'));
  try {
    process.stderr.write(`building ${RECORDS} records...\n`);
    const { store, asciiPath, offsets } = await buildFixtures(dir, RECORDS);
    const ours = join(dir, 'imakeep.sock');
    const theirs = join(dir, 'keylime.sock');
    const api = await startApiServer({ store }, { socket: ours });
    const stopKeylime = await startKeylimeStyle(theirs, asciiPath, offsets);
    const cases: Case[] = [];
    try {
      for (const from of [0, Math.floor(RECORDS / 2), RECORDS - 1000]) {
        cases.push(await measure('imakeep', 'binary', from, ours, `/v1/log?from=${from}`));
        cases.push(await measure('imakeep', 'ascii', from, ours, `/v1/log?from=${from}&format=ascii`));
        cases.push(await measure('keylime-style', 'ascii', from, theirs, `/?entry=${from}`));
      }
    } finally {
      await api.close();
      await stopKeylime();
      await store.close();
    }
    const machine = describeMachine([]);
    const asciiSame = cases.filter((c) => c.format === 'ascii' && c.from === 0);
    const result = {
      machine,
      records: RECORDS,
      runs: RUNS,
      cases,
      note: 'Medians. Client: curl in its own process. peakMemoryMiB: growth of heapUsed+arrayBuffers of the server process.',
      keylimeOverImakeepPeakMemoryFromZero: Number(((asciiSame[1]?.peakMemoryMiB ?? NaN) / (asciiSame[0]?.peakMemoryMiB ?? NaN)).toFixed(1)),
    };
    const out = join(process.cwd(), 'bench', 'results');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'serve.json'), `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`\n### serve: ${RECORDS} records, median of ${RUNS} (${machineLine(machine)})\n\n`);
    process.stdout.write('| server | format | from | MB | MB/s | first byte ms | total ms | peak memory MiB |\n|---|---|---:|---:|---:|---:|---:|---:|\n');
    for (const c of cases) {
      process.stdout.write(`| ${c.server} | ${c.format} | ${c.from} | ${(c.bytes / 1e6).toFixed(1)} | ${c.mbPerS} | ${c.ttfbMs} | ${c.totalMs} | ${c.peakMemoryMiB} |\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
