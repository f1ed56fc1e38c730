/**
 * The fleet's repository: devices, enrollment, per-device verified state, evidence (chunks and
 * checkpoints as the device stored them), verdicts and acknowledgements. One implementation in
 * SQL over {@link SqlDatabase}, so PGlite and a PostgreSQL server run the same statements and the
 * same test suite (test/fleet/repository.test.ts).
 *
 * A device's chain is serialised by its row lock: {@link FleetRepository.withDevice} runs in one
 * transaction that starts with `SELECT … FOR UPDATE` on the device's row, so two pushes of one
 * device (on one process or two) take turns, and pushes of different devices do not wait for each
 * other. Everything a push writes (evidence, state, verdict, acknowledgement) commits together or
 * not at all.
 */
import { FleetError } from './errors.js';
import { migrate } from './schema.js';
import type { SqlDatabase, SqlExecutor, SqlRow } from './sql.js';

/** An operator's or the enrollment's decision on a device. */
export type Enrollment = 'pending' | 'approved' | 'refused';

/** A device's verdict: its verified records all passed its policy, one failed, or none verified yet. */
export type Verdict = 'pass' | 'fail' | 'pending';

/** A record the device's runtime policy refused. */
export interface FailingRecord {
  readonly boot: number;
  /** Global index in the boot. */
  readonly index: number;
  /** The file the record measured, when its template names one. */
  readonly path: string | null;
  /** Why the policy refused it. */
  readonly reason: string;
}

/** A device as the fleet keeps it. */
export interface DeviceRecord {
  readonly id: string;
  readonly enrollment: Enrollment;
  /** `TPM2B_PUBLIC` of the AK the device proved, or null before enrollment. */
  readonly akPublic: Uint8Array | null;
  /** DER of the EK certificate the device presented, if any. */
  readonly ekCertificate: Uint8Array | null;
  /** The runtime policy assigned (its text), or null. */
  readonly policy: string | null;
  /** Where the verified evidence ends (`VerifyStateJson` text), or null before the first bundle. */
  readonly state: string | null;
  /** Records verified so far, over all boots. */
  readonly recordsVerified: number;
  readonly verdict: Verdict;
  /** The first failing records (at most {@link MAX_FAILURES}). */
  readonly failures: readonly FailingRecord[];
  /** Number of the last acknowledgement (0 before the first). */
  readonly ackSeq: number;
  readonly lastSeen: Date | null;
  /** The nonce the fleet last asked the device to quote, until a quote answers it. */
  readonly freshNonce: Uint8Array | null;
  /** When the fleet last verified a quote over its own nonce. */
  readonly freshAt: Date | null;
  readonly createdAt: Date;
  /** SHA-256 of the bearer token issued at enrollment, or null (a device an operator enrolled by its AK). */
  readonly tokenHash: Uint8Array | null;
}

/** How many failing records a device keeps (the first ones: where the trouble began). */
export const MAX_FAILURES = 16;

/** Fields of a device the enrollment or an operator sets. */
export interface DeviceEnrollment {
  readonly enrollment: Enrollment;
  readonly akPublic?: Uint8Array | null;
  readonly ekCertificate?: Uint8Array | null;
  readonly policy?: string | null;
  readonly tokenHash?: Uint8Array | null;
}

/** Fields a push or a freshness answer updates. */
export interface DeviceProgress {
  readonly state?: string;
  readonly recordsVerified?: number;
  readonly verdict?: Verdict;
  readonly failures?: readonly FailingRecord[];
  readonly ackSeq?: number;
  readonly lastSeen?: Date;
  readonly freshNonce?: Uint8Array | null;
  readonly freshAt?: Date;
}

/** A stored chunk of a device. */
export interface ChunkRow {
  readonly boot: number;
  readonly firstIndex: number;
  readonly count: number;
  readonly value: Uint8Array;
}

/** An accepted bundle's verdict. */
export interface VerdictRow {
  readonly seq: number;
  readonly cursor: string;
  readonly next: string;
  readonly records: number;
  readonly verdict: Verdict;
  readonly failures: readonly FailingRecord[];
}

/** An acknowledgement: the EAR token answered for bundle `seq`. */
export interface AckRow {
  readonly seq: number;
  readonly cursor: string;
  readonly token: string;
  readonly at: Date;
}

/** A pending enrollment challenge: the verifier's state (`encodeEnrollPending` JSON), secret. */
export interface EnrollChallengeRow {
  readonly challengeId: string;
  readonly deviceId: string;
  readonly pending: string;
  readonly expiresAt: Date;
}

/** What a push does under a device's row lock. */
export interface DeviceTransaction {
  /** The device row as locked. */
  readonly device: DeviceRecord;
  /** The boot's stored info, if the fleet has it. */
  boot(boot: number): Promise<Uint8Array | undefined>;
  addBoot(boot: number, info: Uint8Array): Promise<void>;
  /** The chunk stored at `firstIndex` of `boot`, if any. */
  chunk(boot: number, firstIndex: number): Promise<Uint8Array | undefined>;
  addChunk(chunk: ChunkRow): Promise<void>;
  /** The checkpoint stored with `count` of `boot`, if any. */
  checkpoint(boot: number, count: number): Promise<Uint8Array | undefined>;
  addCheckpoint(boot: number, count: number, value: Uint8Array): Promise<void>;
  addVerdict(verdict: VerdictRow): Promise<void>;
  addAck(ack: Omit<AckRow, 'at'>): Promise<void>;
  update(progress: DeviceProgress): Promise<void>;
}

/** The fleet's storage, whichever backend. */
export interface FleetRepository {
  readonly backend: SqlDatabase['backend'];
  /** The fleet's signing key (PKCS#8 PEM), made by `generate` on first use and shared by every process. */
  signingKey(generate: () => string): Promise<string>;
  /** Creates or updates a device's enrollment fields. */
  putDevice(id: string, enrollment: DeviceEnrollment): Promise<DeviceRecord>;
  /** Keeps an enrollment challenge until it is answered. */
  putEnrollChallenge(challenge: EnrollChallengeRow): Promise<void>;
  enrollChallenge(challengeId: string): Promise<EnrollChallengeRow | undefined>;
  /**
   * In one transaction: removes the challenge (each is answered once) and writes the device's
   * enrollment fields; undefined when the challenge was already gone (answered concurrently).
   */
  completeEnrollment(challengeId: string, id: string, enrollment: DeviceEnrollment): Promise<DeviceRecord | undefined>;
  device(id: string): Promise<DeviceRecord | undefined>;
  /** Devices by id, `limit` after `after`. */
  devices(after: string | null, limit: number): Promise<DeviceRecord[]>;
  /** Runs `body` with the device's row locked, in one transaction; `FLEET_UNKNOWN_DEVICE` if absent. */
  withDevice<T>(id: string, body: (tx: DeviceTransaction) => Promise<T>): Promise<T>;
  /** Updates a device outside a push (last seen, freshness). */
  touch(id: string, progress: DeviceProgress): Promise<void>;
  /** The boots the fleet holds of a device, by number. */
  boots(id: string): Promise<{ readonly boot: number; readonly info: Uint8Array }[]>;
  /** Records of a boot in stored chunks. */
  storedCount(id: string, boot: number): Promise<number>;
  /** A boot's chunks from the one holding `fromIndex`, in order, a page at a time (bounded memory). */
  chunks(id: string, boot: number, fromIndex: number): AsyncGenerator<ChunkRow>;
  verdicts(id: string, afterSeq: number, limit: number): Promise<VerdictRow[]>;
  /** The newest acknowledgement of a device. */
  lastAck(id: string): Promise<AckRow | undefined>;
  /** Counts for `/metrics`. */
  totals(): Promise<{ readonly devices: number; readonly records: number; readonly chunks: number }>;
  close(): Promise<void>;
}

const DEVICE_COLUMNS =
  'id, enrollment, ak_public, ek_certificate, policy, state, records_verified, verdict, failures, ack_seq, last_seen, fresh_nonce, fresh_at, created_at, token_hash';

/** Chunks read per page of a log stream. */
const CHUNK_PAGE = 16;

/** Bytes as a plain Uint8Array view: pg gives Buffers, PGlite Uint8Arrays; callers see one type. */
function plain(value: Uint8Array): Uint8Array {
  return value.constructor === Uint8Array ? value : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

function bytesOrNull(value: unknown): Uint8Array | null {
  return value instanceof Uint8Array ? plain(value) : null;
}

function dateOrNull(value: unknown): Date | null {
  return value instanceof Date ? value : value === null || value === undefined ? null : new Date(String(value));
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : String(value);
}

function parseFailures(value: unknown): FailingRecord[] {
  const parsed: unknown = JSON.parse(text(value));
  return Array.isArray(parsed) ? (parsed as FailingRecord[]) : [];
}

function enrollmentOf(value: unknown): Enrollment {
  const e = (['pending', 'approved', 'refused'] as const).find((v) => v === value);
  if (e === undefined) throw new FleetError('FLEET_SCHEMA', `devices.enrollment holds '${text(value)}'`, { check: 'row' });
  return e;
}

function verdictOf(value: unknown): Verdict {
  const v = (['pass', 'fail', 'pending'] as const).find((x) => x === value);
  if (v === undefined) throw new FleetError('FLEET_SCHEMA', `verdict holds '${text(value)}'`, { check: 'row' });
  return v;
}

function deviceOf(row: SqlRow): DeviceRecord {
  return {
    id: text(row.id),
    enrollment: enrollmentOf(row.enrollment),
    akPublic: bytesOrNull(row.ak_public),
    ekCertificate: bytesOrNull(row.ek_certificate),
    policy: row.policy === null ? null : text(row.policy),
    state: row.state === null ? null : text(row.state),
    recordsVerified: Number(row.records_verified),
    verdict: verdictOf(row.verdict),
    failures: parseFailures(row.failures),
    ackSeq: Number(row.ack_seq),
    lastSeen: dateOrNull(row.last_seen),
    freshNonce: bytesOrNull(row.fresh_nonce),
    freshAt: dateOrNull(row.fresh_at),
    createdAt: dateOrNull(row.created_at) ?? new Date(0),
    tokenHash: bytesOrNull(row.token_hash),
  };
}

function bytes(row: SqlRow | undefined, column: string): Uint8Array | undefined {
  const value = row?.[column];
  return value instanceof Uint8Array ? plain(value) : undefined;
}

/** `SET a = $2, b = $3 …` of the given progress fields (after `$1`, the device id). */
function progressAssignments(progress: DeviceProgress): { sql: string; params: (string | number | Uint8Array | null)[] } {
  const columns: [string, string | number | Uint8Array | null][] = [];
  if (progress.state !== undefined) columns.push(['state', progress.state]);
  if (progress.recordsVerified !== undefined) columns.push(['records_verified', progress.recordsVerified]);
  if (progress.verdict !== undefined) columns.push(['verdict', progress.verdict]);
  if (progress.failures !== undefined) columns.push(['failures', JSON.stringify(progress.failures.slice(0, MAX_FAILURES))]);
  if (progress.ackSeq !== undefined) columns.push(['ack_seq', progress.ackSeq]);
  if (progress.lastSeen !== undefined) columns.push(['last_seen', progress.lastSeen.toISOString()]);
  if (progress.freshNonce !== undefined) columns.push(['fresh_nonce', progress.freshNonce]);
  if (progress.freshAt !== undefined) columns.push(['fresh_at', progress.freshAt.toISOString()]);
  return { sql: columns.map(([c], i) => `${c} = $${i + 2}`).join(', '), params: columns.map(([, v]) => v) };
}

/** Creates or updates a device's enrollment fields (those given; the others keep their value). */
async function putDevice(db: SqlExecutor, id: string, e: DeviceEnrollment): Promise<DeviceRecord> {
  const rows = await db.query(
    `INSERT INTO devices (id, enrollment, ak_public, ek_certificate, policy, token_hash) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (id) DO UPDATE SET enrollment = EXCLUDED.enrollment,
       ak_public = CASE WHEN $7 THEN EXCLUDED.ak_public ELSE devices.ak_public END,
       ek_certificate = CASE WHEN $8 THEN EXCLUDED.ek_certificate ELSE devices.ek_certificate END,
       policy = CASE WHEN $9 THEN EXCLUDED.policy ELSE devices.policy END,
       token_hash = CASE WHEN $10 THEN EXCLUDED.token_hash ELSE devices.token_hash END
     RETURNING ${DEVICE_COLUMNS}`,
    [
      id,
      e.enrollment,
      e.akPublic ?? null,
      e.ekCertificate ?? null,
      e.policy ?? null,
      e.tokenHash ?? null,
      e.akPublic !== undefined,
      e.ekCertificate !== undefined,
      e.policy !== undefined,
      e.tokenHash !== undefined,
    ],
  );
  const row = rows[0];
  if (row === undefined) throw new FleetError('FLEET_STORAGE', `device ${id} was not written`, { deviceId: id });
  return deviceOf(row);
}

async function update(db: SqlExecutor, id: string, progress: DeviceProgress): Promise<void> {
  const { sql, params } = progressAssignments(progress);
  if (params.length === 0) return;
  await db.query(`UPDATE devices SET ${sql} WHERE id = $1`, [id, ...params]);
}

class SqlDeviceTransaction implements DeviceTransaction {
  readonly device: DeviceRecord;
  readonly #tx: SqlExecutor;

  constructor(tx: SqlExecutor, device: DeviceRecord) {
    this.#tx = tx;
    this.device = device;
  }

  async boot(boot: number): Promise<Uint8Array | undefined> {
    return bytes((await this.#tx.query('SELECT info FROM boots WHERE device_id = $1 AND boot = $2', [this.device.id, boot]))[0], 'info');
  }

  async addBoot(boot: number, info: Uint8Array): Promise<void> {
    await this.#tx.query('INSERT INTO boots (device_id, boot, info) VALUES ($1, $2, $3)', [this.device.id, boot, info]);
  }

  async chunk(boot: number, firstIndex: number): Promise<Uint8Array | undefined> {
    const rows = await this.#tx.query('SELECT value FROM chunks WHERE device_id = $1 AND boot = $2 AND first_index = $3', [this.device.id, boot, firstIndex]);
    return bytes(rows[0], 'value');
  }

  async addChunk(c: ChunkRow): Promise<void> {
    // A plain INSERT: a chunk stored twice is a primary-key violation that rolls the push back.
    await this.#tx.query('INSERT INTO chunks (device_id, boot, first_index, record_count, value) VALUES ($1, $2, $3, $4, $5)', [
      this.device.id,
      c.boot,
      c.firstIndex,
      c.count,
      c.value,
    ]);
  }

  async checkpoint(boot: number, count: number): Promise<Uint8Array | undefined> {
    const rows = await this.#tx.query('SELECT value FROM checkpoints WHERE device_id = $1 AND boot = $2 AND record_count = $3', [this.device.id, boot, count]);
    return bytes(rows[0], 'value');
  }

  async addCheckpoint(boot: number, count: number, value: Uint8Array): Promise<void> {
    await this.#tx.query('INSERT INTO checkpoints (device_id, boot, record_count, value) VALUES ($1, $2, $3, $4)', [this.device.id, boot, count, value]);
  }

  async addVerdict(v: VerdictRow): Promise<void> {
    await this.#tx.query('INSERT INTO verdicts (device_id, seq, cursor, next, records, verdict, failures) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
      this.device.id,
      v.seq,
      v.cursor,
      v.next,
      v.records,
      v.verdict,
      JSON.stringify(v.failures.slice(0, MAX_FAILURES)),
    ]);
  }

  async addAck(a: Omit<AckRow, 'at'>): Promise<void> {
    await this.#tx.query('INSERT INTO acks (device_id, seq, cursor, token) VALUES ($1, $2, $3, $4)', [this.device.id, a.seq, a.cursor, a.token]);
  }

  update(progress: DeviceProgress): Promise<void> {
    return update(this.#tx, this.device.id, progress);
  }
}

/** The repository over a migrated database. */
class SqlFleetRepository implements FleetRepository {
  readonly #db: SqlDatabase;

  constructor(db: SqlDatabase) {
    this.#db = db;
  }

  get backend(): SqlDatabase['backend'] {
    return this.#db.backend;
  }

  async signingKey(generate: () => string): Promise<string> {
    // Two processes starting together: one INSERT wins, both read the winner's key.
    await this.#db.query('INSERT INTO fleet_keys (id, private_pem) VALUES (1, $1) ON CONFLICT (id) DO NOTHING', [generate()]);
    const rows = await this.#db.query('SELECT private_pem FROM fleet_keys WHERE id = 1');
    return text(rows[0]?.private_pem);
  }

  putDevice(id: string, e: DeviceEnrollment): Promise<DeviceRecord> {
    return putDevice(this.#db, id, e);
  }

  async putEnrollChallenge(c: EnrollChallengeRow): Promise<void> {
    await this.#db.query('INSERT INTO enroll_challenges (challenge_id, device_id, pending, expires_at) VALUES ($1, $2, $3, $4)', [
      c.challengeId,
      c.deviceId,
      c.pending,
      c.expiresAt.toISOString(),
    ]);
  }

  async enrollChallenge(challengeId: string): Promise<EnrollChallengeRow | undefined> {
    const row = (await this.#db.query('SELECT challenge_id, device_id, pending, expires_at FROM enroll_challenges WHERE challenge_id = $1', [challengeId]))[0];
    return row === undefined ? undefined : { challengeId: text(row.challenge_id), deviceId: text(row.device_id), pending: text(row.pending), expiresAt: dateOrNull(row.expires_at) ?? new Date(0) };
  }

  completeEnrollment(challengeId: string, id: string, e: DeviceEnrollment): Promise<DeviceRecord | undefined> {
    return this.#db.transaction(async (tx) => {
      const gone = await tx.query('DELETE FROM enroll_challenges WHERE challenge_id = $1 RETURNING challenge_id', [challengeId]);
      return gone.length === 0 ? undefined : putDevice(tx, id, e);
    });
  }

  async device(id: string): Promise<DeviceRecord | undefined> {
    const row = (await this.#db.query(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = $1`, [id]))[0];
    return row === undefined ? undefined : deviceOf(row);
  }

  async devices(after: string | null, limit: number): Promise<DeviceRecord[]> {
    const rows = await this.#db.query(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE $1::text IS NULL OR id > $1 ORDER BY id LIMIT $2`, [after, limit]);
    return rows.map(deviceOf);
  }

  withDevice<T>(id: string, body: (tx: DeviceTransaction) => Promise<T>): Promise<T> {
    return this.#db.transaction(async (tx) => {
      const row = (await tx.query(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = $1 FOR UPDATE`, [id]))[0];
      if (row === undefined) throw new FleetError('FLEET_UNKNOWN_DEVICE', `no device '${id.slice(0, 64)}'`, { deviceId: id });
      return body(new SqlDeviceTransaction(tx, deviceOf(row)));
    });
  }

  touch(id: string, progress: DeviceProgress): Promise<void> {
    return update(this.#db, id, progress);
  }

  async boots(id: string): Promise<{ readonly boot: number; readonly info: Uint8Array }[]> {
    const rows = await this.#db.query('SELECT boot, info FROM boots WHERE device_id = $1 ORDER BY boot', [id]);
    return rows.map((r) => ({ boot: Number(r.boot), info: bytes(r, 'info') ?? new Uint8Array() }));
  }

  async storedCount(id: string, boot: number): Promise<number> {
    const rows = await this.#db.query('SELECT coalesce(max(first_index + record_count), 0) AS n FROM chunks WHERE device_id = $1 AND boot = $2', [id, boot]);
    return Number(rows[0]?.n ?? 0);
  }

  async *chunks(id: string, boot: number, fromIndex: number): AsyncGenerator<ChunkRow> {
    // The chunk holding `fromIndex`: the last one starting at or before it.
    const first = await this.#db.query('SELECT max(first_index) AS first FROM chunks WHERE device_id = $1 AND boot = $2 AND first_index <= $3', [id, boot, fromIndex]);
    let next = first[0]?.first === null || first[0]?.first === undefined ? 0 : Number(first[0].first);
    for (;;) {
      const rows = await this.#db.query(
        'SELECT first_index, record_count, value FROM chunks WHERE device_id = $1 AND boot = $2 AND first_index >= $3 ORDER BY first_index LIMIT $4',
        [id, boot, next, CHUNK_PAGE],
      );
      for (const r of rows) yield { boot, firstIndex: Number(r.first_index), count: Number(r.record_count), value: bytes(r, 'value') ?? new Uint8Array() };
      const last = rows.at(-1);
      if (rows.length < CHUNK_PAGE || last === undefined) return;
      next = Number(last.first_index) + 1;
    }
  }

  async verdicts(id: string, afterSeq: number, limit: number): Promise<VerdictRow[]> {
    const rows = await this.#db.query('SELECT seq, cursor, next, records, verdict, failures FROM verdicts WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3', [
      id,
      afterSeq,
      limit,
    ]);
    return rows.map((r) => ({
      seq: Number(r.seq),
      cursor: text(r.cursor),
      next: text(r.next),
      records: Number(r.records),
      verdict: verdictOf(r.verdict),
      failures: parseFailures(r.failures),
    }));
  }

  async lastAck(id: string): Promise<AckRow | undefined> {
    const row = (await this.#db.query('SELECT seq, cursor, token, at FROM acks WHERE device_id = $1 ORDER BY seq DESC LIMIT 1', [id]))[0];
    return row === undefined ? undefined : { seq: Number(row.seq), cursor: text(row.cursor), token: text(row.token), at: dateOrNull(row.at) ?? new Date(0) };
  }

  async totals(): Promise<{ readonly devices: number; readonly records: number; readonly chunks: number }> {
    const rows = await this.#db.query(
      'SELECT (SELECT count(*) FROM devices) AS devices, (SELECT coalesce(sum(records_verified), 0) FROM devices) AS records, (SELECT count(*) FROM chunks) AS chunks',
    );
    const r = rows[0];
    return { devices: Number(r?.devices ?? 0), records: Number(r?.records ?? 0), chunks: Number(r?.chunks ?? 0) };
  }

  close(): Promise<void> {
    return this.#db.close();
  }
}

/** The repository over `db`, migrated to this code's schema. */
export async function openRepository(db: SqlDatabase): Promise<FleetRepository> {
  try {
    await migrate(db);
  } catch (e) {
    await db.close().catch(() => undefined);
    throw e;
  }
  return new SqlFleetRepository(db);
}
