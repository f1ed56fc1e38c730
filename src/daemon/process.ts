/**
 * The daemon process: how it is started on a small device (Node flags, glibc malloc settings) and
 * where its files are, by convention inside its store directory: LevelDB admits one process, so
 * `imakeep log` and `imakeep status` go through the daemon's socket (or read its status file) while
 * it runs, and open the store directly otherwise.
 */
import { join } from 'node:path';

/**
 * Node flags of the daemon on a small device. `--max-semi-space-size=1` is the flag that matters:
 * peak RSS of a streaming ingest 128-133 MB → 75-80 MB at 5-15 % throughput
 * (bench/ingest.ts; test/slow/memory-bound.test.ts holds the bound); a 32 MB old space leaves headroom over the 8 MB the pipeline needs.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--max-old-space-size=32'];

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
