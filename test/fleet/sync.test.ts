/**
 * The device side of the fleet: a real device (swtpm, LevelDB store) that collected while the
 * fleet was down syncs its backlog, resumes after a lost acknowledgement without counting anything
 * twice, answers the freshness challenge with its TPM, marks what is acknowledged as exported and
 * lets retention drop only boots the fleet holds; while the fleet is down it backs off within
 * bounds.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, FleetSync, FRESH_PCR } from '../../src/testing/index.js';
import { CollectedDevice } from '../serve/_collected.js';
import { bundleFrom, call, enrollDevice, pushBundle, testFleet } from './_fleet.js';

describe('fleet sync from a device', () => {
  let device: CollectedDevice;
  let running: Awaited<ReturnType<typeof testFleet>> | undefined;

  before(async () => {
    device = await CollectedDevice.start({ chunkRecords: 20 });
  });

  after(async () => {
    await running?.stop();
    await device?.close();
  });

  /**
   * Runs a sync loop against `fleetUrl` for `rounds` failed rounds (backoff from 100 ms up to
   * 1 s, no jitter), recording each error and each delay it waited.
   */
  async function failedRounds(fleetUrl: string, rounds: number): Promise<{ errors: { code: string; status: unknown }[]; delays: number[]; sync: FleetSync }> {
    const delays: number[] = [];
    const controller = new AbortController();
    const sync = new FleetSync({
      fleetUrl,
      deviceId: 'dev',
      store: device.store,
      backoff: { initialMs: 100, maxMs: 1000 },
      random: () => 0.999,
      sleep: async (ms) => {
        delays.push(ms);
        if (delays.length === rounds) controller.abort();
      },
    });
    const errors: { code: string; status: unknown }[] = [];
    await sync.run(50, controller.signal, undefined, (e) => errors.push({ code: (e as { code: string }).code, status: (e as { details: { status?: unknown } }).details.status }));
    return { errors, delays, sync };
  }

  it('while the fleet is down: SYNC_FLEET_UNAVAILABLE, retried after bounded jittered delays', async () => {
    const { errors, delays } = await failedRounds('http://127.0.0.1:9', 6);
    assert.deepEqual(errors.map((e) => e.code), Array(6).fill('SYNC_FLEET_UNAVAILABLE'));
    assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
    assert.deepEqual([0, 3, 40].map((a) => backoffDelay(a, { initialMs: 100, maxMs: 1000 }, () => 0)), [50, 400, 500]);
  });

  it('a fleet answering 408, 429 or 503 is unavailable (backed off), not a refusal', async () => {
    const statuses = [408, 429, 503];
    let served = 0;
    const server = createServer((req, res) => {
      req.resume();
      res.writeHead(statuses[served++ % statuses.length] as number, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const { errors, delays, sync } = await failedRounds(`http://127.0.0.1:${port}`, 3);
      assert.deepEqual(errors, statuses.map((status) => ({ code: 'SYNC_FLEET_UNAVAILABLE', status })));
      assert.deepEqual(delays, [100, 200, 400]);
      assert.equal(sync.status().state, 'backing-off');
    } finally {
      server.close();
    }
  });

  it('syncs the backlog collected offline in bounded bundles, then only what is new', async () => {
    for (let i = 0; i < 12; i++) await device.cycle(25);
    running = await testFleet();
    await enrollDevice(running.fleet, 'dev', device);
    const sync = new FleetSync({ fleetUrl: running.url, deviceId: 'dev', store: device.store, maxBundleBytes: 8 * 1024, freshQuote: (nonce) => device.quoter.quoteAndRead(nonce, [FRESH_PCR]) });
    const round = await sync.syncOnce();
    assert.equal(round.records, 300);
    assert.ok(round.bundles > 1, `${round.bundles} bundles`);
    assert.equal(round.cursor, `0.300.301`);
    assert.equal(typeof round.freshAt, 'string');
    const view = (await call(running.url, '/v1/devices/dev')).body;
    assert.deepEqual(view.verifiedUpTo, { cursor: '0.300.301', boot: 0, index: 300, records: 300 });
    assert.equal((view.freshness as { quotedAt: string }).quotedAt, round.freshAt);
    assert.equal((await device.store.bootRecord(0)).exported?.cursor, 300);
    const idle = await sync.syncOnce();
    assert.deepEqual([idle.bundles, idle.records], [0, 0]);
  });

  it('an acknowledgement lost in a cut: the next sync resumes where the fleet is, counting nothing twice', async () => {
    assert.ok(running !== undefined);
    await device.cycle(30);
    // The push reached the fleet, the answer never reached the device.
    const lost = await bundleFrom(device, '0.300.301');
    assert.equal((await pushBundle(running.url, 'dev', lost.bytes)).status, 200);
    await device.cycle(10);
    const sync = new FleetSync({ fleetUrl: running.url, deviceId: 'dev', store: device.store });
    const round = await sync.syncOnce();
    assert.equal(round.records, 10);
    const view = (await call(running.url, '/v1/devices/dev')).body;
    assert.equal((view.verifiedUpTo as { records: number }).records, 340);
    assert.equal((view.verifiedUpTo as { index: number }).index, 340);
  });

  it('retention drops a finished boot only once the fleet acknowledged it whole', async () => {
    assert.ok(running !== undefined);
    await device.reboot();
    await device.cycle(15);
    const sync = new FleetSync({ fleetUrl: running.url, deviceId: 'dev', store: device.store, retainMs: 0 });
    const round = await sync.syncOnce();
    assert.deepEqual(round.dropped, [0]);
    assert.equal(round.cursor, '1.15.16');
    const boots = [];
    for await (const { boot } of device.store.boots()) boots.push(boot);
    assert.deepEqual(boots, [1]);
    // The fleet still serves the dropped boot's whole log.
    const log = await fetch(`${running.url}/v1/devices/dev/log?boot=0&format=ascii`);
    assert.equal((await log.text()).split('\n').filter((l) => l.length > 0).length, 340);
  });
});
