/**
 * The embedded backend: PGlite, PostgreSQL compiled to WASM running in this process, its cluster
 * on disk under the fleet's data directory, so `imakeep fleet --data DIR` needs nothing installed.
 * One process owns the directory (PGlite is single-connection): its transactions are serialised
 * by PGlite itself, which is also what a device's row lock asks for.
 *
 * Durable commits (docs/fleet.md#durability): PGlite starts PostgreSQL with fsync off (`-F`) on
 * Emscripten's NODEFS, whose fsync does nothing and whose fdatasync is a no-op syscall, so a
 * resolved commit would be in the kernel's page cache only. Here PostgreSQL runs with fsync on and
 * `wal_sync_method = fsync`, and NODEFS streams get the fsync operation Emscripten's `fd_sync`
 * calls (`stream_ops.fsync`), an fsync(2) of the host file: COMMIT returns once its WAL is on disk,
 * as on a PostgreSQL server, and an acknowledgement is never ahead of what survives a power loss.
 */
import { fsyncSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { PGlite, type Transaction } from '@electric-sql/pglite';
import { NodeFS } from '@electric-sql/pglite/nodefs';
import type { SqlDatabase, SqlExecutor, SqlRow, SqlValue } from './sql.js';
import { FleetError } from './errors.js';
import { storageError } from './storage-error.js';

function executor(db: PGlite | Transaction): SqlExecutor {
  return {
    async query(sql: string, params: readonly SqlValue[] = []): Promise<SqlRow[]> {
      try {
        return (await db.query<SqlRow>(sql, [...params])).rows;
      } catch (e) {
        throw storageError(e, sql);
      }
    },
  };
}

/** An Emscripten NODEFS stream: `nfd` is the host file descriptor of a regular file (none for a directory). */
interface NodefsStream {
  readonly nfd?: number;
}

/** NODEFS whose streams fsync(2) their host file when PostgreSQL syncs (see the module comment). */
class SyncingNodeFS extends NodeFS {
  override async init(...args: Parameters<NodeFS['init']>): ReturnType<NodeFS['init']> {
    const setup = await super.init(...args);
    const syncing = (mod: { readonly NODEFS: object }): void => {
      const ops = (mod.NODEFS as { stream_ops?: Record<string, unknown> }).stream_ops;
      if (ops === undefined) throw new FleetError('FLEET_STORAGE', 'this PGlite has no NODEFS stream operations to make its commits durable', { check: 'pglite-fsync' });
      ops.fsync = (stream: NodefsStream): number => {
        if (stream.nfd !== undefined) fsyncSync(stream.nfd);
        return 0;
      };
    };
    return { ...setup, emscriptenOpts: { ...setup.emscriptenOpts, preRun: [...(setup.emscriptenOpts.preRun ?? []), syncing] } };
  }
}

/** PGlite's start parameters with fsync on, synced by fsync(2) (fdatasync is a no-op in Emscripten). */
const START_PARAMS = [...PGlite.defaultStartParams.filter((p) => p !== '-F'), '-c', 'wal_sync_method=fsync'];

/** Opens (creating when absent) the PGlite cluster in `dir`. */
export async function openPglite(dir: string): Promise<SqlDatabase> {
  await mkdir(dir, { recursive: true });
  let db: PGlite;
  try {
    db = await PGlite.create({ fs: new SyncingNodeFS(dir), startParams: START_PARAMS });
  } catch (e) {
    throw storageError(e, `open PGlite in ${dir}`);
  }
  const outer = executor(db);
  return {
    backend: 'pglite',
    query: outer.query,
    async transaction<T>(body: (tx: SqlExecutor) => Promise<T>): Promise<T> {
      return db.transaction((tx) => body(executor(tx)));
    },
    close: () => db.close(),
  };
}
