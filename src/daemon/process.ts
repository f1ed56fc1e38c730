/**
 * The daemon process: how it is started on a small device (Node flags, glibc malloc settings) and
 * where its files are, by convention inside its store directory: LevelDB admits one process, so
 * `imakeep log` and `imakeep status` go through the daemon's socket (or read its status file) while
 * it runs, and open the store directly otherwise.
 */
import { join } from 'node:path';

/**
 * Node flags of the daemon on a small device, each measured (bench/results/lean.md, "The daemon's
 * process settings"):
 * - `--max-semi-space-size=1`: peak RSS of a streaming ingest 128-133 MB → 75-80 MB at 5-15 %
 *   throughput (bench/ingest.ts; test/slow/memory-bound.test.ts holds the bound).
 * - `--max-old-space-size=16` (was 32): V8 lets the old generation grow towards its limit before a
 *   full GC, so each cycle's promoted garbage (a read window's records, chunk drafts) stacked up
 *   step by step: in the memory-pressure runaway (`bench/memory-pressure.ts`, 20,000 records at
 *   1,000/s) RssAnon peaked at 26.8-27.4 MiB with 32, 23.6-23.8 with 16. The live heap after a
 *   full GC is 8-10 MiB (the ingest bench's heapUsed from 10k to 3M records), so 16 leaves 1.6x.
 * - `--no-opt` (no TurboFan; Ignition and Sparkplug run everything): TurboFan's compiler is ~4 MiB
 *   of node's binary that the first hot function pages in (RssFile 41.8 → 38.1 MiB) plus its
 *   compile zones and code (malloc, V8 code space). With both flags the memory-pressure runaway
 *   peaks at 59.5-60.4 MiB RSS / 19.7-21.3 MiB RssAnon (was 69.4-71.5 / 26.8-27.4) and the boot
 *   burst at 57.0-57.1 / 16.9-17.0 (was 63.4-63.6 / 19.8-20.7). CPU: the daemon's CPU per record
 *   in those workloads fell (runaway 40.5-46.5 µs against 47.5-56.5; TurboFan compiled on its
 *   threads what a burst of a few thousand records never paid back); in a continuous 100k-record
 *   ingest it rose by a third (bench/ingest.ts child, median 13.5 → 17.9 µs/record, the
 *   optimized parser and chunk loops are gone).
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--max-old-space-size=16', '--no-opt'];

/**
 * glibc malloc settings of the daemon. glibc reads them once, at process start (mallopt(3)), so
 * they belong in the service unit (`examples/imakeep.service`). Measured with `bench/ingest.ts`,
 * 1M records, flavour n, under {@link DAEMON_NODE_FLAGS}, RssAnon at 10k / 1M records:
 * - glibc's defaults: 53.1 / 85.0 MiB. Each thread that allocates gets its own arena, up to 8 per
 *   core (libuv's pool threads run LevelDB's writes, LevelDB compacts on its own thread, V8 has
 *   workers), and the thread arenas grew 35.7 → 52.6 MiB;
 * - `MALLOC_ARENA_MAX=2`: 53.0 / 61.6 MiB; thread arenas flat, but the brk heap wanders 29-37 MiB:
 *   freeing a large mmapped block raises glibc's mmap threshold to its size, so later ~1 MiB
 *   values and read buffers come from the heap and fragment it;
 * - and `MALLOC_MMAP_THRESHOLD_=131072` (glibc's initial value; fixing it also stops the dynamic
 *   raise): 37.6 / 41.3 MiB, and 40.7-45.4 MiB at every sample from 10k to 3M records of a longer
 *   run: no longer a function of the log's length (test/slow/memory-bound.test.ts holds it).
 */
export const DAEMON_MALLOC_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' };

/** The settings of {@link DAEMON_MALLOC_ENV} that `env` lacks or sets otherwise (`NAME=value`). */
export function missingDaemonEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  return Object.entries(DAEMON_MALLOC_ENV)
    .filter(([name, value]) => env[name] !== value)
    .map(([name, value]) => `${name}=${value}`);
}

/** Paths of a daemon's files in store directory `storeDir`. */
export interface DaemonPaths {
  /** The HTTP API's unix socket. */
  readonly socket: string;
  /** `status()` as JSON, rewritten after every cycle. */
  readonly statusFile: string;
  /** The fleet's bearer token, or the enrollment exchange in progress (mode 0600; `fleet-client.ts`). */
  readonly fleetCredentials: string;
}

/** The daemon files of the store in `storeDir`. */
export function daemonPaths(storeDir: string): DaemonPaths {
  return { socket: join(storeDir, 'imakeep.sock'), statusFile: join(storeDir, 'imakeep-status.json'), fleetCredentials: join(storeDir, 'fleet-credentials.json') };
}
