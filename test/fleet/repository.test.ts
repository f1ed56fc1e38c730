/**
 * The fleet repository, one suite run against both backends (PGlite and a PostgreSQL server):
 * migrations, devices, the all-or-nothing push transaction, the per-device row lock, paged chunk
 * reads, acknowledgements.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openRepository, type FleetRepository, type SqlDatabase } from '../../src/fleet/index.js';
import { BACKENDS, postgresBackend, type Backend } from './_backends.js';
import { migrate, SCHEMA_VERSION } from '../../src/testing/index.js';

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);

function repositorySuite(make: () => Promise<Backend>): void {
  let backend: Backend;
  let repo: FleetRepository;
  let db: SqlDatabase;
  let reopen: () => Promise<SqlDatabase>;

  before(async () => {
    backend = await make();
    const fresh = await backend.fresh();
    db = fresh.db;
    reopen = fresh.reopen;
    repo = await openRepository(fresh.db);
  });

  /** Another process's connection on a server; PGlite has one owner, so its own connection. */
  const otherConnection = async (): Promise<SqlDatabase> => (backend.shared ? reopen() : db);

  after(async () => {
    await repo?.close();
    await backend?.stop();
  });

  it('migrates once: a second migrate applies nothing and keeps the data', async () => {
    await repo.putDevice('m', { enrollment: 'pending' });
    const other = await otherConnection();
    try {
      assert.equal(await migrate(other), SCHEMA_VERSION);
      const rows = await other.query('SELECT version FROM fleet_migrations ORDER BY version');
      assert.deepEqual(rows.map((r) => Number(r.version)), Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1));
    } finally {
      if (other !== db) await other.close();
    }
    assert.equal((await repo.device('m'))?.enrollment, 'pending');
  });

  it('commits are durable: fsync and synchronous_commit on (PGlite as a server: docs/fleet.md#durability)', async () => {
    const rows = await db.query("SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit') ORDER BY name");
    assert.deepEqual(rows.map((r) => [r.name, r.setting]), [['fsync', 'on'], ['synchronous_commit', 'on']]);
  });

  it('refuses a database whose schema is newer than the code (FLEET_SCHEMA), writing nothing', async () => {
    const fresh = await backend.fresh();
    await migrate(fresh.db);
    await fresh.db.query('INSERT INTO fleet_migrations (version) VALUES ($1)', [SCHEMA_VERSION + 1]);
    await fresh.db.close();
    await assert.rejects(fresh.reopen().then(openRepository), { code: 'FLEET_SCHEMA' });
  });

  it('creates, updates and lists devices, keeping fields an update leaves out', async () => {
    const created = await repo.putDevice('dev-a', { enrollment: 'pending', akPublic: bytes(1, 2, 3), policy: 'p1' });
    assert.equal(created.enrollment, 'pending');
    assert.deepEqual(created.akPublic, bytes(1, 2, 3));
    assert.equal(created.verdict, 'pending');
    assert.equal(created.ackSeq, 0);
    assert.equal(created.state, null);
    const approved = await repo.putDevice('dev-a', { enrollment: 'approved' });
    assert.equal(approved.enrollment, 'approved');
    assert.deepEqual(approved.akPublic, bytes(1, 2, 3));
    assert.equal(approved.policy, 'p1');
    await repo.putDevice('dev-b', { enrollment: 'refused' });
    await repo.putDevice('dev-c', { enrollment: 'approved', policy: null });
    const page1 = await repo.devices(null, 2);
    const page2 = await repo.devices(page1.at(-1)?.id ?? null, 2);
    assert.deepEqual([...page1, ...page2].map((d) => d.id).filter((id) => id.startsWith('dev-')), ['dev-a', 'dev-b', 'dev-c']);
    assert.equal(await repo.device('nobody'), undefined);
  });

  it('withDevice on an unknown device throws FLEET_UNKNOWN_DEVICE', async () => {
    await assert.rejects(
      repo.withDevice('ghost', async () => 1),
      { code: 'FLEET_UNKNOWN_DEVICE', details: { deviceId: 'ghost' } },
    );
  });

  it('a push commits evidence, state, verdict and acknowledgement together', async () => {
    await repo.putDevice('push', { enrollment: 'approved' });
    await repo.withDevice('push', async (tx) => {
      await tx.addBoot(0, bytes(9));
      await tx.addChunk({ boot: 0, firstIndex: 0, count: 3, value: bytes(1) });
      await tx.addCheckpoint(0, 3, bytes(2));
      await tx.addVerdict({ seq: 1, cursor: '0.0.0', next: '0.3.4', records: 3, verdict: 'pass', failures: [] });
      await tx.addAck({ seq: 1, cursor: '0.3.4', token: 'tok1' });
      await tx.update({ state: '{"s":1}', recordsVerified: 3, verdict: 'pass', ackSeq: 1, lastSeen: new Date(1_700_000_000_000) });
    });
    const d = await repo.device('push');
    assert.equal(d?.state, '{"s":1}');
    assert.equal(d?.recordsVerified, 3);
    assert.equal(d?.verdict, 'pass');
    assert.equal(d?.lastSeen?.getTime(), 1_700_000_000_000);
    assert.deepEqual(await repo.boots('push'), [{ boot: 0, info: bytes(9) }]);
    const ack = await repo.lastAck('push');
    assert.deepEqual({ seq: ack?.seq, cursor: ack?.cursor, token: ack?.token }, { seq: 1, cursor: '0.3.4', token: 'tok1' });
    assert.deepEqual(await repo.verdicts('push', 0, 10), [{ seq: 1, cursor: '0.0.0', next: '0.3.4', records: 3, verdict: 'pass', failures: [] }]);
  });

  it('a push that throws leaves nothing behind: not its evidence, not its state', async () => {
    await repo.putDevice('undone', { enrollment: 'approved' });
    await assert.rejects(
      repo.withDevice('undone', async (tx) => {
        await tx.addChunk({ boot: 0, firstIndex: 0, count: 1, value: bytes(1) });
        await tx.update({ state: 'moved', recordsVerified: 1 });
        throw new Error('verification failed');
      }),
      /verification failed/,
    );
    const d = await repo.device('undone');
    assert.equal(d?.state, null);
    assert.equal(d?.recordsVerified, 0);
    assert.equal(await repo.withDevice('undone', (tx) => tx.chunk(0, 0)), undefined);
  });

  it('a chunk stored twice is refused (FLEET_STORAGE, SQLSTATE 23505) and the push rolls back', async () => {
    await repo.putDevice('twice', { enrollment: 'approved' });
    await repo.withDevice('twice', (tx) => tx.addChunk({ boot: 0, firstIndex: 0, count: 1, value: bytes(1) }));
    await assert.rejects(
      repo.withDevice('twice', async (tx) => {
        await tx.update({ recordsVerified: 99 });
        await tx.addChunk({ boot: 0, firstIndex: 0, count: 1, value: bytes(1) });
      }),
      { code: 'FLEET_STORAGE', details: { causeCode: '23505' } },
    );
    assert.equal((await repo.device('twice'))?.recordsVerified, 0);
  });

  it('reads a boot chunks in order from the chunk holding any index, across pages', async () => {
    await repo.putDevice('pages', { enrollment: 'approved' });
    await repo.withDevice('pages', async (tx) => {
      for (let i = 0; i < 40; i++) await tx.addChunk({ boot: 1, firstIndex: i * 10, count: 10, value: bytes(i) });
      await tx.addChunk({ boot: 2, firstIndex: 0, count: 5, value: bytes(200) });
    });
    const all = [];
    for await (const c of repo.chunks('pages', 1, 0)) all.push(c.firstIndex);
    assert.deepEqual(all, Array.from({ length: 40 }, (_, i) => i * 10));
    const mid = [];
    for await (const c of repo.chunks('pages', 1, 255)) mid.push(c.firstIndex);
    assert.deepEqual(mid, Array.from({ length: 15 }, (_, i) => 250 + i * 10));
    const other = [];
    for await (const c of repo.chunks('pages', 2, 0)) other.push([c.firstIndex, c.count, c.value[0]]);
    assert.deepEqual(other, [[0, 5, 200]]);
  });

  it('one device: concurrent pushes take turns under its row lock (no update lost)', async () => {
    await repo.putDevice('lock', { enrollment: 'approved' });
    const other = backend.shared ? await openRepository(await reopen()) : repo;
    try {
      const pushes = Array.from({ length: 12 }, (_, i) =>
        (i % 2 === 0 ? repo : other).withDevice('lock', async (tx) => {
          // Read, yield to the other pushes, write: a lost update without the lock.
          const seen = tx.device.recordsVerified;
          await new Promise((r) => setTimeout(r, 5));
          await tx.update({ recordsVerified: seen + 1 });
        }),
      );
      await Promise.all(pushes);
      assert.equal((await repo.device('lock'))?.recordsVerified, 12);
    } finally {
      if (other !== repo) await other.close();
    }
  });

  it('the fleet key is made once and shared by every process on the database', async () => {
    const first = await repo.signingKey(() => 'KEY-1');
    const other = backend.shared ? await openRepository(await reopen()) : repo;
    try {
      assert.equal(await other.signingKey(() => 'KEY-2'), first);
    } finally {
      if (other !== repo) await other.close();
    }
    assert.equal(first, 'KEY-1');
  });

  it('totals count devices, verified records and chunks', async () => {
    const t = await repo.totals();
    assert.ok(t.devices >= 6, String(t.devices));
    assert.equal(t.records, 3 + 12);
    assert.equal(t.chunks, 1 + 1 + 41);
  });
}

for (const [name, make] of BACKENDS) {
  describe(`fleet repository on ${name}`, () => repositorySuite(make));
}

describe('fleet repository on postgres: different devices do not wait for each other', () => {
  let backend: Backend;
  before(async () => {
    backend = await postgresBackend();
  });
  after(async () => backend?.stop());

  it('while one process holds device A, another process pushes device B to the end', async () => {
    const fresh = await backend.fresh();
    const one = await openRepository(fresh.db);
    const two = await openRepository(await fresh.reopen());
    try {
      await one.putDevice('A', { enrollment: 'approved' });
      await one.putDevice('B', { enrollment: 'approved' });
      let releaseA: () => void = () => undefined;
      const held = new Promise<void>((r) => (releaseA = r));
      let aLocked: () => void = () => undefined;
      const locked = new Promise<void>((r) => (aLocked = r));
      const a = one.withDevice('A', async (tx) => {
        aLocked();
        await held;
        await tx.update({ recordsVerified: 1 });
      });
      await locked;
      // B completes while A's lock is held: row locks, not a table lock.
      await two.withDevice('B', (tx) => tx.update({ recordsVerified: 7 }));
      assert.equal((await two.device('B'))?.recordsVerified, 7);
      assert.equal((await two.device('A'))?.recordsVerified, 0);
      releaseA();
      await a;
      assert.equal((await two.device('A'))?.recordsVerified, 1);
    } finally {
      await one.close();
      await two.close();
    }
  });
});
