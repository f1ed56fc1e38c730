/**
 * A private PostgreSQL server for tests and benchmarks: Debian's `postgresql` (initdb + pg_ctl) on
 * a free loopback port, its cluster and socket in a fresh temp dir, trust authentication for the
 * one user `imakeep`. PostgreSQL refuses to run as root, so under root the server runs as the
 * `postgres` system user (runuser), which owns the temp dir.
 *
 * Stopped by `pg_ctl stop` on its own data dir (never by name); servers still running when the
 * node process exits are stopped from a process 'exit' hook.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImakeepError } from '../src/errors.js';

/** PostgreSQL could not be found, set up or started. */
export class PostgresHarnessError extends ImakeepError {
  constructor(code: 'POSTGRES_MISSING' | 'POSTGRES_START_FAILED', message: string) {
    super(code, message);
  }
}

/** A running private server. */
export interface PostgresInstance {
  /** `postgres://imakeep@127.0.0.1:PORT/imakeep` */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Stops the server the hard way (`-m immediate`: no shutdown checkpoint, like a crash) and starts it again on the same port. */
  crashAndRestart(): Promise<void>;
  /** Stops the server and removes its directory; safe to call more than once. */
  stop(): Promise<void>;
}

/** Debian installs the binaries per major version; `pg_config --bindir` would need libpq-dev. */
const BIN_DIRS = ['/usr/lib/postgresql/17/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/15/bin'];

function binDir(): string {
  for (const dir of BIN_DIRS) {
    if (spawnSync(join(dir, 'pg_ctl'), ['--version']).status === 0) return dir;
  }
  throw new PostgresHarnessError('POSTGRES_MISSING', 'PostgreSQL is not installed: apt-get install postgresql (or node scripts/ensure.mjs test)');
}

const running = new Map<string, () => void>();
let exitHookInstalled = false;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Runs a PostgreSQL binary, as the `postgres` user when we are root. */
function run(bin: string, args: readonly string[]): { status: number | null; output: string } {
  const asRoot = process.getuid?.() === 0;
  const [command, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, [...args]];
  const r = spawnSync(command, argv, { encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error?.message ?? ''}` };
}

function uidOf(user: string): number {
  const r = spawnSync('id', ['-u', user], { encoding: 'utf8' });
  const uid = Number(r.stdout.trim());
  if (r.status !== 0 || !Number.isInteger(uid)) throw new PostgresHarnessError('POSTGRES_MISSING', `no '${user}' user (install Debian's postgresql)`);
  return uid;
}

/** Starts a private server and creates the database `imakeep`. */
export async function startPostgres(): Promise<PostgresInstance> {
  const bin = binDir();
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-pg-'));
  if (process.getuid?.() === 0) chownSync(dir, uidOf('postgres'), 0);
  const dataDir = join(dir, 'data');
  const init = run(join(bin, 'initdb'), ['-D', dataDir, '-U', 'imakeep', '-A', 'trust', '--no-sync', '-E', 'UTF8']);
  if (init.status !== 0) throw new PostgresHarnessError('POSTGRES_START_FAILED', `initdb failed: ${init.output}`);
  const port = await freePort();
  // The socket in our own dir (not /var/run/postgresql, which may not exist); TCP on loopback only.
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=200`;
  const start = (): void => {
    const r = run(join(bin, 'pg_ctl'), ['-D', dataDir, '-o', options, '-l', join(dir, 'log'), '-w', '-t', '60', 'start']);
    if (r.status !== 0) throw new PostgresHarnessError('POSTGRES_START_FAILED', `pg_ctl start failed: ${r.output}`);
  };
  const halt = (mode: 'fast' | 'immediate'): void => {
    run(join(bin, 'pg_ctl'), ['-D', dataDir, '-m', mode, '-w', 'stop']);
  };
  start();
  const create = run(join(bin, 'createdb'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'imakeep', 'imakeep']);
  if (create.status !== 0) {
    halt('immediate');
    throw new PostgresHarnessError('POSTGRES_START_FAILED', `createdb failed: ${create.output}`);
  }
  running.set(dir, () => {
    halt('immediate');
    rmSync(dir, { recursive: true, force: true });
  });
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const stop of running.values()) stop();
      running.clear();
    });
  }
  let stopped = false;
  return {
    url: `postgres://imakeep@127.0.0.1:${port}/imakeep`,
    port,
    dataDir,
    async crashAndRestart() {
      halt('immediate');
      start();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      running.delete(dir);
      halt('fast');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
