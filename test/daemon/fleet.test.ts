/**
 * `startDaemon` with a fleet, on the real parts (swtpm with EK certificates from swtpm's local CA,
 * the FUSE securityfs emulator, LevelDB, PGlite): the daemon collects while the fleet is down and
 * backs off; when the fleet comes up it enrolls itself (EK certificate chained to the fleet's CA,
 * credential activation on its TPM), pushes its backlog from the start, answers the freshness
 * challenge; status and metrics show the sync; restarted, it keeps its token and pushes only what
 * is new.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { swtpmCaDirectory } from '../../hw/swtpm.js';
import { daemonGet, startDaemon, type Daemon, type DaemonOptions, type FleetSyncStatus, type SyncRound } from '../../src/daemon/index.js';
import { startFleet, type Fleet } from '../../src/fleet/index.js';
import { RIG_BANKS, startRig, type Rig } from '../collector/_rig.js';

async function text(res: AsyncIterable<Buffer>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of res) parts.push(part);
  return Buffer.concat(parts).toString('utf8');
}

/** A TCP port nobody listens on (yet). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return address.port;
}

/** Resolves with the first value `probe` gives that `done` accepts, polling every 100 ms. */
async function until<T>(probe: () => T | Promise<T>, done: (value: T) => boolean, what: string, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('startDaemon with a fleet', () => {
  let rig: Rig;
  let fleet: Fleet | undefined;
  let daemon: Daemon | undefined;
  let caDir: string;
  let port: number;

  before(async () => {
    rig = await startRig({ ekCertificates: true });
    await rig.store.close();
    caDir = swtpmCaDirectory(join(rig.work, 'ca'));
    port = await freePort();
  });

  after(async () => {
    await daemon?.stop();
    await fleet?.close();
    await rig.reopenStore();
    await rig.stop();
  });

  const start = (rounds: SyncRound[]): Promise<Daemon> => {
    const options: DaemonOptions = {
      storeDir: rig.storeDir,
      tpm: rig.tpm,
      collector: { securityfsRoot: rig.emu.securityfsRoot, cmdlinePath: rig.cmdlinePath, bootIdPath: rig.bootIdPath, banks: RIG_BANKS, flavor: 'n', intervalMs: 50 },
      fleet: { url: `http://127.0.0.1:${port}`, deviceId: 'rig-1', intervalMs: 200, backoff: { initialMs: 100, maxMs: 400 } },
      onSync: (round) => {
        if (round !== undefined) rounds.push(round);
      },
    };
    return startDaemon(options);
  };

  it('collects while the fleet is down, then enrolls itself and syncs the backlog; status and metrics show it', async () => {
    await rig.append(300);
    const rounds: SyncRound[] = [];
    daemon = await start(rounds);
    const running = daemon;
    await until(() => running.collector.status().removed, (n) => n === 300, 'the collector to remove 300 records');
    // Polled, the status can be caught in the next round's short `syncing` before it fails again:
    // wait for a moment between rounds, which must be the backoff.
    const down = await until(() => running.fleet?.status(), (s) => (s?.failures ?? 0) >= 2 && s?.state !== 'syncing', 'two failed rounds');
    assert.equal(down?.state, 'backing-off');
    assert.equal(down?.enrollment, 'none');
    assert.equal(down?.lastError?.code, 'SYNC_FLEET_UNAVAILABLE');
    assert.deepEqual(rounds, []);

    fleet = await startFleet({ data: join(rig.work, 'fleet'), listen: { host: '127.0.0.1', port }, ca: caDir });
    const synced = await until(() => running.fleet?.status(), (s) => (s?.recordsAcknowledged ?? 0) >= 300 && s?.freshAt !== null, 'the backlog acknowledged and a fresh quote', 180_000);
    assert.equal(synced?.enrollment, 'approved');
    assert.equal(synced?.recordsAcknowledged, 300);
    const view = (await (await fetch(`${fleet.address}/v1/devices/rig-1`)).json()) as { enrollment: string; verifiedUpTo: { records: number; index: number }; verdict: string; freshness: unknown };
    assert.equal(view.enrollment, 'approved');
    assert.deepEqual([view.verifiedUpTo.records, view.verifiedUpTo.index], [300, 300]);
    assert.equal(view.verdict, 'pass');
    assert.notEqual(view.freshness, null);
    // The token is kept for the next start, readable by root only.
    const credentials = JSON.parse(readFileSync(running.paths.fleetCredentials, 'utf8')) as { token: string; enrollment: string };
    assert.equal(credentials.enrollment, 'approved');
    assert.equal(statSync(running.paths.fleetCredentials).mode & 0o777, 0o600);
    const api = JSON.parse(await text(await daemonGet(running.paths.socket, '/v1/status'))) as { collector: { fleet: FleetSyncStatus } };
    assert.equal(api.collector.fleet.recordsAcknowledged, 300);
    assert.equal(api.collector.fleet.deviceId, 'rig-1');
    const metrics = await text(await daemonGet(running.paths.socket, '/metrics'));
    assert.match(metrics, /^imakeep_fleet_enrolled 1$/m);
    assert.match(metrics, /^imakeep_fleet_records_acknowledged_total 300$/m);
    assert.match(metrics, /^imakeep_fleet_sync_errors_total\{code="SYNC_FLEET_UNAVAILABLE"\} [1-9]\d*$/m);
  });

  it('restarted, it keeps its token and pushes only what is new from the acknowledged cursor', async () => {
    assert.ok(daemon !== undefined && fleet !== undefined);
    const token = (JSON.parse(readFileSync(daemon.paths.fleetCredentials, 'utf8')) as { token: string }).token;
    await daemon.stop();
    await rig.append(40);
    const rounds: SyncRound[] = [];
    daemon = await start(rounds);
    const running = daemon;
    await until(() => running.fleet?.status().recordsAcknowledged ?? 0, (n) => n >= 40, 'the new records acknowledged', 180_000);
    assert.equal(running.fleet?.status().recordsAcknowledged, 40);
    assert.equal(running.fleet?.status().enrollment, 'approved');
    assert.equal((JSON.parse(readFileSync(running.paths.fleetCredentials, 'utf8')) as { token: string }).token, token);
    const view = (await (await fetch(`${fleet.address}/v1/devices/rig-1`)).json()) as { verifiedUpTo: { records: number } };
    assert.equal(view.verifiedUpTo.records, 340);
  });
});
