/**
 * The one small interface the fleet's repository speaks to PostgreSQL through, so the same SQL runs
 * on both backends: PGlite (PostgreSQL compiled to WASM, in-process, on disk: `pglite.ts`) and a
 * PostgreSQL server shared by several fleet processes (`postgres.ts`).
 */

/** A parameter of a statement: `$1`, `$2`, … */
export type SqlValue = string | number | boolean | Uint8Array | null;

/** One result row, by column name; bigint columns arrive as number (PGlite) or string (pg). */
export type SqlRow = Readonly<Record<string, unknown>>;

/** Runs statements: the database itself, or one transaction of it. */
export interface SqlExecutor {
  query(sql: string, params?: readonly SqlValue[]): Promise<SqlRow[]>;
}

/** A database the repository can use. */
export interface SqlDatabase extends SqlExecutor {
  readonly backend: 'pglite' | 'postgres';
  /**
   * Runs `body` in one transaction (BEGIN … COMMIT; ROLLBACK when it throws). When the returned
   * promise resolves, the transaction is committed: durable (PostgreSQL's commit waits for the WAL
   * flush, `synchronous_commit` on).
   */
  transaction<T>(body: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}
