/**
 * The fleet's two storage backends as factories, so one test suite runs on both: PGlite in a
 * fresh temp dir, and a database of its own on a private PostgreSQL server (hw/postgres.ts)
 * started once per test file.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPglite, openPostgres, type SqlDatabase } from '../../src/fleet/index.js';
import { startPostgres, type PostgresInstance } from '../../hw/postgres.js';

/** Makes fresh databases of one backend; `reopen` opens another connection to the same one (another process's view). */
export interface Backend {
  readonly name: 'pglite' | 'postgres';
  /** True when several connections share the database (a server): row locks then matter across them. */
  readonly shared: boolean;
  /** A fresh, empty database. */
  fresh(): Promise<{ db: SqlDatabase; reopen(): Promise<SqlDatabase> }>;
  /** What `startFleet` takes for a fresh, empty database: a server URL, or nothing (PGlite under its data dir). */
  fleetDatabase(): Promise<{ readonly database?: string }>;
  /** The server, for restart tests (postgres only). */
  readonly server?: PostgresInstance;
  stop(): Promise<void>;
}

/** PGlite in temp dirs removed by `stop`. */
export function pgliteBackend(): Backend {
  const dirs: string[] = [];
  return {
    name: 'pglite',
    shared: false,
    async fresh() {
      const dir = mkdtempSync(join(tmpdir(), 'imakeep-pglite-'));
      dirs.push(dir);
      return { db: await openPglite(dir), reopen: () => openPglite(dir) };
    },
    fleetDatabase: async () => ({}),
    async stop() {
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A private server; each `fresh` creates a database of its own on it. */
export async function postgresBackend(): Promise<Backend> {
  const server = await startPostgres();
  const admin = openPostgres(server.url, 1);
  let n = 0;
  const freshUrl = async (): Promise<string> => {
    const name = `t${++n}`;
    await admin.query(`CREATE DATABASE ${name}`);
    return server.url.replace(/\/imakeep$/, `/${name}`);
  };
  return {
    name: 'postgres',
    shared: true,
    server,
    async fresh() {
      const url = await freshUrl();
      return { db: openPostgres(url), reopen: async () => openPostgres(url) };
    },
    fleetDatabase: async () => ({ database: await freshUrl() }),
    async stop() {
      await admin.close();
      await server.stop();
    },
  };
}

/** Both backends by name, for `for (const [name, make] of BACKENDS) describe(name, () => suite(make))`. */
export const BACKENDS: readonly (readonly ['pglite' | 'postgres', () => Promise<Backend>])[] = [
  ['pglite', async () => pgliteBackend()],
  ['postgres', postgresBackend],
];
