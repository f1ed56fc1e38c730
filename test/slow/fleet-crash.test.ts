/**
 * Crashes mid-push, on both backends: a fleet process SIGKILLed while a multi-bundle body streams
 * and while a device's sync pushes a large backlog, and (on the server) PostgreSQL stopped the
 * hard way and restarted mid-push. After each: nothing the fleet acknowledged is lost (the
 * device's store marks as exported only what the fleet's database holds), no record is counted
 * twice (the verified count equals the records in stored chunks), every acknowledgement has its
 * row, and the device's next sync ends exactly at its last record.
 *
 * PGlite's own durability under SIGKILL is tested directly too: a process committing row after
 * row is killed at random points and every commit that resolved is found again
 * (docs/fleet.md#durability: the WAL is written, and fsynced, before COMMIT returns).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { FleetService, openPglite, openPostgres, openRepository, type SqlDatabase } from '../../src/fleet/index.js';
import { FleetSync, BUNDLE_FRAMES_TYPE, frameBundle } from '../../src/testing/index.js';
import { CollectedDevice } from '../serve/_collected.js';
import { BACKENDS, postgresBackend, type Backend } from '../fleet/_backends.js';
import { bundleFrom, call } from '../fleet/_fleet.js';
import { spawnFleet, until, type FleetProcess } from '../../hw/fleet-process.js';

/** The device's backlog: cycles of 500 records in chunks of about 100 (the collector bounds chunks in bytes). */
const CYCLES = 12;
const PER_CYCLE = 500;
const TOTAL = CYCLES * PER_CYCLE;
const CHUNK = 100;

async function backlogDevice(): Promise<CollectedDevice> {
  const device = await CollectedDevice.start({ chunkRecords: CHUNK });
  for (let i = 0; i < CYCLES; i++) await device.cycle(PER_CYCLE);
  return device;
}

/** What the fleet's database holds of device `dev`. */
interface Counts {
  readonly recordsVerified: number;
  readonly ackSeq: number;
  /** Records in stored chunks, and chunks. */
  readonly chunkRecords: number;
  readonly chunks: number;
  readonly acks: number;
  readonly verdicts: number;
}

/** A fleet's database, opened by the test while no fleet process runs on it (PGlite has one owner). */
class FleetData {
  readonly data = mkdtempSync(join(tmpdir(), 'imakeep-fleet-crash-'));
  constructor(readonly database: string | undefined) {}

  async #open(): Promise<SqlDatabase> {
    return this.database === undefined ? openPglite(join(this.data, 'pglite')) : openPostgres(this.database, 1);
  }

  async enroll(device: CollectedDevice): Promise<void> {
    const service = await FleetService.open(await openRepository(await this.#open()));
    try {
      await service.enroll('dev', { enrollment: 'approved', akPublic: (await device.ak()).public });
    } finally {
      await service.repository.close();
    }
  }

  async counts(): Promise<Counts> {
    const db = await this.#open();
    try {
      const [row] = await db.query(
        `SELECT records_verified, ack_seq,
           (SELECT coalesce(sum(record_count), 0) FROM chunks WHERE device_id = 'dev') AS chunk_records,
           (SELECT count(*) FROM chunks WHERE device_id = 'dev') AS chunks,
           (SELECT count(*) FROM acks WHERE device_id = 'dev') AS acks,
           (SELECT count(*) FROM verdicts WHERE device_id = 'dev') AS verdicts
         FROM devices WHERE id = 'dev'`,
      );
      assert.ok(row !== undefined);
      return {
        recordsVerified: Number(row.records_verified),
        ackSeq: Number(row.ack_seq),
        chunkRecords: Number(row.chunk_records),
        chunks: Number(row.chunks),
        acks: Number(row.acks),
        verdicts: Number(row.verdicts),
      };
    } finally {
      await db.close();
    }
  }

  start(): Promise<FleetProcess> {
    return spawnFleet(this.data, this.database);
  }

  remove(): void {
    rmSync(this.data, { recursive: true, force: true });
  }
}

/** Records of boot 0 the device's store marks as acknowledged by the fleet (what retention may drop). */
async function exported(device: CollectedDevice): Promise<number> {
  return (await device.store.bootRecord(0)).exported?.cursor ?? 0;
}

/** Where each of the device's stored chunks of boot 0 ends (global index one past its last record). */
async function chunkEnds(device: CollectedDevice): Promise<number[]> {
  const ends: number[] = [];
  for await (const { chunk } of device.store.chunks(0)) ends.push(chunk.firstIndex + chunk.count);
  return ends;
}

/**
 * The invariants after a crash: the database holds at least what the device was acknowledged,
 * every verified record once (in the device's chunks, whole: `ends` from {@link chunkEnds}), one
 * verdict and one acknowledgement per accepted bundle.
 */
async function assertConsistent(counts: Counts, acknowledged: number, device: CollectedDevice): Promise<void> {
  assert.ok(counts.recordsVerified >= acknowledged, `the device was acknowledged ${acknowledged} records, the database holds ${counts.recordsVerified}`);
  assert.equal(counts.chunkRecords, counts.recordsVerified);
  const ends = await chunkEnds(device);
  assert.ok(counts.recordsVerified === 0 || ends.includes(counts.recordsVerified), `${counts.recordsVerified} records verified: not a chunk boundary`);
  assert.equal(counts.chunks, ends.filter((end) => end <= counts.recordsVerified).length);
  assert.equal(counts.acks, counts.ackSeq);
  assert.equal(counts.verdicts, counts.ackSeq);
}

/** Syncs to the end and checks the fleet ends exactly at the device's last record. */
async function syncToEnd(fleet: FleetProcess, device: CollectedDevice, data: FleetData): Promise<void> {
  const round = await new FleetSync({ fleetUrl: fleet.url, deviceId: 'dev', store: device.store, maxBundleBytes: 128 * 1024 }).syncOnce();
  assert.equal(round.cursor, `0.${TOTAL}.${TOTAL + 1}`);
  const view = (await call(fleet.url, '/v1/devices/dev')).body;
  assert.deepEqual(view.verifiedUpTo, { cursor: round.cursor, boot: 0, index: TOTAL, records: TOTAL });
  const log = await (await fetch(`${fleet.url}/v1/devices/dev/log?format=ascii`)).text();
  assert.equal(log.split('\n').filter((l) => l.length > 0).length, TOTAL);
  await fleet.kill();
  const counts = await data.counts();
  await assertConsistent(counts, TOTAL, device);
  assert.equal(counts.recordsVerified, TOTAL);
  assert.equal(await exported(device), TOTAL);
}

function crashSuite(make: () => Promise<Backend>): void {
  let backend: Backend;
  const cleanup: (() => Promise<void>)[] = [];

  before(async () => {
    backend = await make();
  });

  after(async () => {
    for (const step of cleanup.reverse()) await step().catch(() => undefined);
    await backend?.stop();
  });

  async function setup(): Promise<{ device: CollectedDevice; data: FleetData }> {
    const device = await backlogDevice();
    const data = new FleetData((await backend.fleetDatabase()).database);
    cleanup.push(async () => {
      await device.close();
      data.remove();
    });
    await data.enroll(device);
    return { device, data };
  }

  it('SIGKILL while a multi-bundle body streams: the bundles committed before the cut stay, the cut one is not stored, the device resumes at the fleet', async () => {
    const { device, data } = await setup();
    const bundles = [];
    for (let from: string | undefined, i = 0; i < 6; i++) {
      const b = await bundleFrom(device, from, 64 * 1024);
      bundles.push(b);
      from = b.next;
    }
    const committed = bundles[4];
    const cut = bundles[5];
    assert.ok(committed !== undefined && cut !== undefined);
    let fleet = await data.start();
    cleanup.push(() => fleet.kill());
    const req = request(`${fleet.url}/v1/devices/dev/evidence`, { method: 'POST', headers: { 'content-type': BUNDLE_FRAMES_TYPE } });
    const answered = new Promise<string>((resolve) => {
      req.on('response', (res) => resolve(`status ${String(res.statusCode)}`));
      req.on('error', (e) => resolve(e.message));
    });
    for (const b of bundles.slice(0, 5)) req.write(frameBundle(b.bytes));
    const frame = frameBundle(cut.bytes);
    req.write(frame.subarray(0, frame.length >> 1));
    await until(async () => ((await call(fleet.url, '/v1/devices/dev')).body.verifiedUpTo as { cursor?: string } | null)?.cursor === committed.next);
    await fleet.kill();
    assert.doesNotMatch(await answered, /^status/); // the request never got an answer
    const index = Number(committed.next.split('.')[1]);
    const counts = await data.counts();
    await assertConsistent(counts, 0, device);
    assert.deepEqual([counts.recordsVerified, counts.ackSeq], [index, 5]);
    fleet = await data.start();
    await syncToEnd(fleet, device, data);
  });

  it('SIGKILL at moments after acknowledgements while a sync pushes its backlog: no acknowledgement ahead of the database, nothing counted twice', async () => {
    const { device, data } = await setup();
    for (let round = 0; round < 3; round++) {
      const fleet = await data.start();
      cleanup.push(() => fleet.kill());
      const before = await exported(device);
      let settled = false;
      const syncing = new FleetSync({ fleetUrl: fleet.url, deviceId: 'dev', store: device.store, maxBundleBytes: 128 * 1024 })
        .syncOnce()
        .then(
          () => 'done',
          (e: { code?: string }) => e.code ?? String(e),
        )
        .finally(() => (settled = true));
      await until(async () => settled || (await exported(device)) > before);
      // Into the next push: streaming, verifying, committing or answering, wherever 0-150 ms lands.
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 150)));
      await fleet.kill();
      assert.ok(['done', 'SYNC_FLEET_UNAVAILABLE'].includes(await syncing), await syncing);
      const acknowledged = await exported(device);
      assert.ok(acknowledged > before, `round ${round}: no acknowledgement reached the device`);
      await assertConsistent(await data.counts(), acknowledged, device);
    }
    await syncToEnd(await data.start(), device, data);
  });

  if (make === postgresBackend) {
    it('PostgreSQL stopped the hard way and restarted mid-push: the fleet answers 503 meanwhile, keeps running, and the sync ends exactly at the device', async () => {
      const { device, data } = await setup();
      const server = backend.server;
      assert.ok(server !== undefined);
      const fleet = await data.start();
      cleanup.push(() => fleet.kill());
      const sync = new FleetSync({ fleetUrl: fleet.url, deviceId: 'dev', store: device.store, maxBundleBytes: 128 * 1024 });
      let settled = false;
      const syncing = sync
        .syncOnce()
        .then(
          () => 'done',
          (e: { code?: string }) => e.code ?? String(e),
        )
        .finally(() => (settled = true));
      await until(async () => settled || (await exported(device)) > 0);
      await server.crashAndRestart();
      assert.ok(['done', 'SYNC_FLEET_UNAVAILABLE'].includes(await syncing), await syncing);
      assert.equal(fleet.child.exitCode, null);
      await assertConsistent(await data.counts(), await exported(device), device);
      await syncToEnd(fleet, device, data);
    });
  }
}

for (const [name, make] of BACKENDS) {
  describe(`fleet crashes on ${name}`, () => crashSuite(make));
}

describe('PGlite under SIGKILL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-pglite-kill-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A process committing one row per transaction and printing its number once the commit resolved. */
  const writer = `
    const { openPglite } = await import(${JSON.stringify(new URL('../../src/fleet/index.js', import.meta.url).href)});
    const db = await openPglite(process.argv[1]);
    await db.query('CREATE TABLE IF NOT EXISTS t (seq integer PRIMARY KEY, pad bytea NOT NULL)');
    const [{ next }] = await db.query('SELECT coalesce(max(seq), 0) + 1 AS next FROM t');
    for (let seq = Number(next); ; seq++) {
      await db.transaction((tx) => tx.query('INSERT INTO t VALUES ($1, $2)', [seq, new Uint8Array(2048).fill(seq & 255)]));
      process.stdout.write(seq + '\\n');
    }`;

  it('loses no transaction whose commit resolved before the kill (three kills at random points)', async () => {
    let last = 0;
    for (let kill = 0; kill < 3; kill++) {
      const child = spawn(process.execPath, ['--input-type=module', '-e', writer, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = once(child, 'exit');
      const stopAfter = last + 50 + Math.floor(Math.random() * 200);
      for await (const line of createInterface({ input: child.stdout })) {
        last = Number(line);
        if (last >= stopAfter) {
          if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
          break;
        }
      }
      await exited;
      const db = await openPglite(dir);
      try {
        const [row] = await db.query('SELECT count(*) AS n, max(seq) AS top FROM t');
        assert.ok(Number(row?.top) >= last, `committed up to ${last}, found ${String(row?.top)}`);
        assert.equal(Number(row?.n), Number(row?.top));
        last = Number(row?.top);
      } finally {
        await db.close();
      }
    }
  });
});
