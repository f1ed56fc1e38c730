/**
 * The API under load, from outside: `imakeep serve` (the daemon's API server, without the
 * collector) runs as a child with the daemon's process settings over a store of `records`
 * records; 200 clients (curl, each its own process) read the whole ASCII log at once, then the
 * server idles. Reported: the server's RssAnon (/proc/PID/status) before, at its peak during the
 * load, and after it; how many readers got 200 and how many `SERVE_BUSY` (503); none may be left
 * without an HTTP answer.
 *
 *   node dist/bench/api-load.js [records] [readers]      (default 20000 200)
 *
 * Writes bench/results/api-load.json.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DAEMON_MALLOC_ENV, DAEMON_NODE_FLAGS } from '../src/daemon/index.js';
import { openStore } from '../src/store/index.js';
import { fillStore } from './_stored.js';
import { CLI, REPO_ROOT } from '../hw/collector-process.js';

const records = Number(process.argv[2] ?? 20_000);
const readers = Number(process.argv[3] ?? 200);

function rssAnonKiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('RssAnon:'));
  return Number((line ?? '0').replace(/[^0-9]/g, ''));
}

/** A store of `n` workload records in 64 KiB chunks. */
async function buildStore(dir: string, n: number): Promise<void> {
  const store = await openStore(dir);
  await fillStore(store, 'bench-api-load', n);
  await store.close();
}

/** One whole-log read by curl: the HTTP status, or 0 when no HTTP answer came. */
function readLog(socket: string): Promise<number> {
  return new Promise((resolve) => {
    execFile('curl', ['-s', '--unix-socket', socket, '-o', '/dev/null', '-w', '%{http_code}', 'http://imakeep/v1/log?format=ascii'], (_err, stdout) => resolve(Number(stdout.trim()) || 0));
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-bench-api-load-'));
  const storeDir = join(dir, 'store');
  const socket = join(dir, 'api.sock');
  try {
    await buildStore(storeDir, records);
    const server = spawn(process.execPath, [...DAEMON_NODE_FLAGS, CLI, 'serve', '--store', storeDir, '--socket', socket], {
      env: { ...process.env, ...DAEMON_MALLOC_ENV },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    try {
      for (let i = 0; i < 200 && !existsSync(socket); i++) await sleep(50);
      const pid = server.pid ?? 0;
      await readLog(socket); // warm up (JIT, page cache), as a served device would be
      await sleep(1000);
      const before = rssAnonKiB(pid);
      let peak = before;
      const sampler = setInterval(() => (peak = Math.max(peak, rssAnonKiB(pid))), 20);
      const statuses = await Promise.all(Array.from({ length: readers }, () => readLog(socket)));
      clearInterval(sampler);
      const after = rssAnonKiB(pid);
      await sleep(5000);
      const idle = rssAnonKiB(pid);
      const count = (code: number): number => statuses.filter((s) => s === code).length;
      const result = {
        records,
        readers,
        ok: count(200),
        busy: count(503),
        noAnswer: count(0),
        other: statuses.filter((s) => s !== 200 && s !== 503 && s !== 0).length,
        rssAnonMiB: { before: before / 1024, peak: peak / 1024, after: after / 1024, afterIdle5s: idle / 1024 },
      };
      mkdirSync(join(REPO_ROOT, 'bench', 'results'), { recursive: true });
      writeFileSync(join(REPO_ROOT, 'bench', 'results', 'api-load.json'), `${JSON.stringify(result, null, 2)}\n`);
      const f = (x: number): string => x.toFixed(1);
      process.stdout.write(
        `${readers} concurrent whole-log readers over ${records} records: ${result.ok} served, ${result.busy} SERVE_BUSY, ${result.noAnswer} without an answer; ` +
          `server RssAnon ${f(result.rssAnonMiB.before)} MiB before, ${f(result.rssAnonMiB.peak)} peak, ${f(result.rssAnonMiB.after)} after, ${f(result.rssAnonMiB.afterIdle5s)} 5 s later\n`,
      );
    } finally {
      server.kill('SIGTERM');
      await new Promise((r) => server.once('exit', r));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
