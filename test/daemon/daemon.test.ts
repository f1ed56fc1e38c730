/**
 * `startDaemon` in the test process, on the real parts (swtpm, the FUSE securityfs emulator,
 * LevelDB): its schedule removes what it stored and checkpointed, it serves status and metrics on
 * its socket and writes its status file, an abort stops it and releases the store and the socket
 * (leaving a caller's TPM open), and a start that fails closes what it opened.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CollectorStatus } from '../../src/collector/index.js';
import { daemonGet, startDaemon, type Daemon, type DaemonCollectorOptions } from '../../src/daemon/index.js';
import { openStore } from '../../src/store/index.js';
import { RIG_BANKS, startRig, type Rig } from '../collector/_rig.js';

async function text(res: AsyncIterable<Buffer>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of res) parts.push(part);
  return Buffer.concat(parts).toString('utf8');
}

function collectorOptions(rig: Rig): DaemonCollectorOptions {
  return { securityfsRoot: rig.emu.securityfsRoot, cmdlinePath: rig.cmdlinePath, bootIdPath: rig.bootIdPath, banks: RIG_BANKS, flavor: 'n', intervalMs: 20 };
}

describe('startDaemon', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
    await rig.store.close();
  });
  after(async () => {
    await rig.reopenStore();
    await rig.stop();
  });

  it('a start that fails (store held by another process) closes what it opened and serves nothing', async () => {
    const holder = await openStore(rig.storeDir);
    try {
      const socket = join(rig.work, 'failed.sock');
      await assert.rejects(startDaemon({ storeDir: rig.storeDir, tpm: rig.tpm, collector: collectorOptions(rig), api: { socket } }), { code: 'STORE_LOCKED' });
      assert.equal(existsSync(socket), false);
    } finally {
      await holder.close();
    }
  });

  it('runs the schedule, serves status and metrics, writes its status file, and stops on abort', async () => {
    await rig.append(300);
    const stop = new AbortController();
    let removedAll: (status: CollectorStatus) => void = () => undefined;
    const allRemoved = new Promise<CollectorStatus>((resolve) => (removedAll = resolve));
    const errors: unknown[] = [];
    const daemon: Daemon = await startDaemon({
      storeDir: rig.storeDir,
      tpm: rig.tpm,
      collector: collectorOptions(rig),
      signal: stop.signal,
      onCycle: (report, error, status) => {
        if (report === undefined) errors.push(error);
        if (status.removed === 300) removedAll(status);
      },
    });
    const status = await allRemoved;
    assert.deepEqual(errors, []);
    assert.equal(status.lastCheckpoint?.count, 300);
    assert.equal(daemon.server.address, `unix:${daemon.paths.socket}`);

    const api = JSON.parse(await text(await daemonGet(daemon.paths.socket, '/v1/status'))) as { collector: { removed: number; process: { rssBytes: number } } };
    assert.equal(api.collector.removed, 300);
    assert.ok(api.collector.process.rssBytes > 0);
    const metrics = await text(await daemonGet(daemon.paths.socket, '/metrics'));
    assert.match(metrics, /^imakeep_removed_records 300$/m);
    assert.match(metrics, /^imakeep_last_checkpoint_records 300$/m);
    assert.equal((JSON.parse(readFileSync(daemon.paths.statusFile, 'utf8')) as { removed: number }).removed, 300);

    stop.abort();
    await daemon.stopped;
    assert.equal(existsSync(daemon.paths.socket), false);
    // The store is released, with everything the daemon stored; the caller's TPM is still open.
    const store = await openStore(rig.storeDir);
    try {
      assert.equal((await store.lastCheckpoint(0))?.count, 300);
    } finally {
      await store.close();
    }
    assert.equal((await rig.tpm.getActiveBanks()).length > 0, true);
  });

  it("manual cycles run only when called; stop() settles 'stopped'", async () => {
    await rig.append(50);
    const daemon = await startDaemon({ storeDir: rig.storeDir, tpm: rig.tpm, collector: collectorOptions(rig), cycles: 'manual' });
    try {
      assert.equal(daemon.collector.status().removed, 300);
      const report = await daemon.cycle();
      assert.equal(report.checkpoint, 350);
      assert.equal(daemon.collector.status().removed, 350);
      assert.equal((JSON.parse(readFileSync(daemon.paths.statusFile, 'utf8')) as { removed: number }).removed, 350);
    } finally {
      await daemon.stop();
    }
    await daemon.stopped;
    assert.equal(existsSync(daemon.paths.socket), false);
  });
});
