/**
 * The server backend: a PostgreSQL server reached with `pg`, shared by several fleet processes.
 * Each transaction holds one pooled connection; a device's chain is serialised by its row lock
 * (`SELECT … FOR UPDATE` in the repository), so different devices proceed in parallel on any
 * process.
 */
import pg from 'pg';
import type { SqlDatabase, SqlExecutor, SqlRow, SqlValue } from './sql.js';
import { storageError } from './storage-error.js';

/** Connections per process; enough for parallel devices, well under the server's default 100. */
const POOL_SIZE = 8;

function executor(client: pg.Pool | pg.PoolClient): SqlExecutor {
  return {
    async query(sql: string, params: readonly SqlValue[] = []): Promise<SqlRow[]> {
      try {
        return (await client.query<SqlRow>(sql, [...params])).rows;
      } catch (e) {
        throw storageError(e, sql);
      }
    },
  };
}

/** Connects a pool to `url` (`postgres://user@host:port/db`); nothing is sent until the first statement. */
export function openPostgres(url: string, poolSize = POOL_SIZE): SqlDatabase {
  const pool = new pg.Pool({ connectionString: url, max: poolSize });
  // An idle connection the server closed (a restart) is reported here; the pool drops it and the
  // next statement opens a new one. Without a listener the process would exit.
  pool.on('error', () => undefined);
  const outer = executor(pool);
  return {
    backend: 'postgres',
    query: outer.query,
    async transaction<T>(body: (tx: SqlExecutor) => Promise<T>): Promise<T> {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (e) {
        throw storageError(e, 'connect');
      }
      const tx = executor(client);
      let broken: Error | undefined;
      try {
        await tx.query('BEGIN');
        const result = await body(tx);
        await tx.query('COMMIT');
        return result;
      } catch (e) {
        await client.query('ROLLBACK').catch((rollback: unknown) => {
          broken = rollback instanceof Error ? rollback : new Error(String(rollback));
        });
        throw e;
      } finally {
        // A connection whose ROLLBACK failed is gone or unusable: the pool must not hand it out again.
        client.release(broken);
      }
    },
    close: () => pool.end(),
  };
}
