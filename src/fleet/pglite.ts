/**
 * The embedded backend: PGlite, PostgreSQL compiled to WASM running in this process, its cluster
 * on disk under the fleet's data directory, so `imakeep fleet --data DIR` needs nothing installed.
 * One process owns the directory (PGlite is single-connection): its transactions are serialised
 * by PGlite itself, which is also what a device's row lock asks for.
 */
import { mkdir } from 'node:fs/promises';
import { PGlite, type Transaction } from '@electric-sql/pglite';
import type { SqlDatabase, SqlExecutor, SqlRow, SqlValue } from './sql.js';
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

/** Opens (creating when absent) the PGlite cluster in `dir`. */
export async function openPglite(dir: string): Promise<SqlDatabase> {
  await mkdir(dir, { recursive: true });
  let db: PGlite;
  try {
    db = await PGlite.create({ dataDir: dir });
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
