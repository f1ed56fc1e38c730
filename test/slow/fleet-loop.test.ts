/**
 * The whole loop with real devices: three devices, each a swtpm, the FUSE securityfs emulator
 * extending into it, the daemon (collector, LevelDB store) and its fleet sync, against one fleet.
 * Two devices sync as they go; one is offline while it collects 50,000 records and reboots, then
 * syncs its backlog. For each device the fleet's verified end is the device's last record, the
 * fleet serves each boot's log byte for byte as the emulated kernel measured it, and retention
 * dropped exactly the boots the fleet acknowledged whole (and nothing before the acknowledgement).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { FleetSync, ImaWorkload } from '../../src/testing/index.js';
import { Tpm } from '../../src/tpm/index.js';
import { startSecurityfsEmulator, type SecurityfsEmulator } from '../../hw/securityfs/emulator.js';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';
import { call, testFleet } from '../fleet/_fleet.js';

const BANKS = ['sha1', 'sha256'] as const;

/** A device: one TPM for its life; per boot an emulated kernel (emulator), a boot id and a daemon. */
class LoopDevice {
  readonly work = mkdtempSync(join(tmpdir(), 'imakeep-loop-'));
  readonly storeDir = join(this.work, 'store');
  readonly bootIdPath = join(this.work, 'boot_id');
  readonly cmdlinePath = join(this.work, 'cmdline');
  readonly workload: ImaWorkload;
  /** Records appended per boot (index = store boot number) and each boot's kernel list, SHA-1 binary. */
  readonly appended: number[] = [];
  readonly kernelLists: Buffer[] = [];
  emu: SecurityfsEmulator | undefined;
  daemon: Daemon | undefined;

  private constructor(
    readonly id: string,
    readonly swtpm: SwtpmInstance,
    readonly tpm: Tpm,
    seed: number,
  ) {
    this.workload = new ImaWorkload({ seed, template: 'mixed', violationRate: 0.01 });
    writeFileSync(this.cmdlinePath, 'BOOT_IMAGE=/vmlinuz ro\n');
  }

  static async start(id: string, seed: number): Promise<LoopDevice> {
    const swtpm = await startSwtpm();
    const device = new LoopDevice(id, swtpm, Tpm.open(swtpm.address), seed);
    await device.#boot();
    return device;
  }

  async #boot(): Promise<void> {
    const boot = this.appended.length;
    writeFileSync(this.bootIdPath, `7d0c5b1e-0000-4000-8000-${String(boot).padStart(12, '0')}\n`);
    this.emu = await startSecurityfsEmulator({ banks: [...BANKS], tpm: this.tpm, tpmBanks: [...BANKS], seqBufBytes: 0 });
    this.appended.push(0);
    this.daemon = await startDaemon({
      storeDir: this.storeDir,
      tpm: this.tpm,
      cycles: 'manual',
      api: { socket: join(this.work, 'api.sock') },
      collector: { securityfsRoot: this.emu.securityfsRoot, cmdlinePath: this.cmdlinePath, bootIdPath: this.bootIdPath, banks: [...BANKS], flavor: 'n' },
    });
  }

  get store(): Daemon['store'] {
    assert.ok(this.daemon !== undefined);
    return this.daemon.store;
  }

  /** The kernel measures `n` records in batches of `batch`; the daemon runs a cycle after each. */
  async collect(n: number, batch = 5000): Promise<void> {
    assert.ok(this.emu !== undefined && this.daemon !== undefined);
    for (let left = n; left > 0; left -= batch) {
      const count = Math.min(batch, left);
      await this.emu.append([...this.workload.records(count)]);
      this.appended[this.appended.length - 1] = (this.appended.at(-1) ?? 0) + count;
      await this.daemon.cycle();
    }
  }

  /**
   * Reboots: the daemon stops, the kernel's list is gone (the emulator stops, keeping its oracle
   * list), the TPM is reset (TPM2_Shutdown(CLEAR), swtpm's init, TPM2_Startup: PCRs to zero,
   * resetCount + 1, the same seeds and so the same AK), a new boot id, a new daemon.
   */
  async reboot(): Promise<void> {
    assert.ok(this.emu !== undefined && this.daemon !== undefined);
    await this.daemon.stop();
    this.kernelLists.push(readFileSync(this.emu.control.oracleBinary));
    await this.emu.stop();
    await this.tpm.transport.send(Uint8Array.of(0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, 0, 0));
    const init = spawnSync('swtpm_ioctl', ['--tcp', `${this.swtpm.host}:${this.swtpm.ctrlPort}`, '-i'], { encoding: 'utf8' });
    assert.equal(init.status, 0, init.stderr);
    await this.tpm.startup();
    await this.#boot();
  }

  /** The current boot's kernel list so far. */
  currentList(): Buffer {
    assert.ok(this.emu !== undefined);
    return readFileSync(this.emu.control.oracleBinary);
  }

  sync(fleetUrl: string): FleetSync {
    return new FleetSync({ fleetUrl, deviceId: this.id, store: this.store, retainMs: 0, maxBundleBytes: 1024 * 1024 });
  }

  async boots(): Promise<number[]> {
    const boots: number[] = [];
    for await (const { boot } of this.store.boots()) boots.push(boot);
    return boots;
  }

  async stop(): Promise<void> {
    await this.daemon?.stop().catch(() => undefined);
    await this.emu?.stop().catch(() => undefined);
    await this.tpm.close().catch(() => undefined);
    await this.swtpm.stop();
    rmSync(this.work, { recursive: true, force: true });
  }
}

describe('the whole loop: three real devices, one offline for 50,000 records', () => {
  let running: Awaited<ReturnType<typeof testFleet>>;
  const devices: LoopDevice[] = [];

  before(async () => {
    running = await testFleet();
    for (const [i, id] of ['alpha', 'bravo', 'charlie'].entries()) devices.push(await LoopDevice.start(id, 11 + i));
  });

  after(async () => {
    for (const d of devices) await d.stop();
    await running?.stop();
  });

  /** The fleet's view of a device must end at its last record: boot, index and every record counted once. */
  async function assertVerifiedToEnd(d: LoopDevice): Promise<void> {
    const boot = d.appended.length - 1;
    const index = d.appended[boot] ?? 0;
    const view = (await call(running.url, `/v1/devices/${d.id}`)).body;
    assert.deepEqual(view.verifiedUpTo, { cursor: `${boot}.${index}.${index + 1}`, boot, index, records: d.appended.reduce((a, b) => a + b, 0) });
    assert.equal(view.verdict, 'pass');
  }

  /** The fleet serves boot `boot` of the device byte for byte as its kernel measured it. */
  async function assertFleetLog(d: LoopDevice, boot: number, list: Buffer): Promise<void> {
    const res = await fetch(`${running.url}/v1/devices/${d.id}/log?boot=${boot}&format=binary&bank=sha1`);
    assert.equal(res.status, 200);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(list), `device ${d.id} boot ${boot}: the fleet's log differs from the kernel's`);
  }

  it('devices that sync as they go: each acknowledgement moves the verified end to the last record; a reboot, and retention drops the acknowledged boot', async () => {
    const [alpha, bravo] = devices as [LoopDevice, LoopDevice];
    for (const d of [alpha, bravo]) {
      await d.collect(400, 200);
      await running.fleet.service.enroll(d.id, { enrollment: 'approved', akPublic: d.store.meta.akPublic });
      assert.equal((await d.sync(running.url).syncOnce()).records, 400);
      await d.collect(300, 300);
      const round = await d.sync(running.url).syncOnce();
      assert.deepEqual([round.records, round.dropped], [300, []]);
      await assertVerifiedToEnd(d);
    }
    await alpha.reboot();
    await alpha.collect(250, 250);
    const round = await alpha.sync(running.url).syncOnce();
    assert.deepEqual([round.records, round.dropped, round.cursor], [250, [0], '1.250.251']);
    assert.deepEqual(await alpha.boots(), [1]);
    await assertVerifiedToEnd(alpha);
    await assertFleetLog(alpha, 0, alpha.kernelLists[0] ?? Buffer.alloc(0));
    await assertFleetLog(alpha, 1, alpha.currentList());
    await assertFleetLog(bravo, 0, bravo.currentList());
  });

  it('a device offline while it collects 50,000 records and reboots: nothing dropped while unacknowledged, then its backlog syncs and only the acknowledged boot is dropped', async () => {
    const charlie = devices[2];
    assert.ok(charlie !== undefined);
    await charlie.collect(50_000, 5000);
    await running.fleet.service.enroll(charlie.id, { enrollment: 'approved', akPublic: charlie.store.meta.akPublic });
    // Offline: nothing answers at the fleet's address.
    const offline = charlie.sync('http://127.0.0.1:9');
    await assert.rejects(offline.syncOnce(), { code: 'SYNC_FLEET_UNAVAILABLE' });
    await charlie.reboot();
    await charlie.collect(1200, 600);
    await assert.rejects(charlie.sync('http://127.0.0.1:9').syncOnce(), { code: 'SYNC_FLEET_UNAVAILABLE' });
    assert.deepEqual(await charlie.boots(), [0, 1]);
    assert.equal((await charlie.store.bootRecord(0)).exported, null);

    const round = await charlie.sync(running.url).syncOnce();
    assert.equal(round.records, 51_200);
    assert.ok(round.bundles > 1, `${round.bundles} bundles`);
    assert.deepEqual(round.dropped, [0]);
    assert.deepEqual(await charlie.boots(), [1]);
    assert.equal((await charlie.store.bootRecord(1)).exported?.cursor, 1200);
    await assertVerifiedToEnd(charlie);
    await assertFleetLog(charlie, 0, charlie.kernelLists[0] ?? Buffer.alloc(0));
    await assertFleetLog(charlie, 1, charlie.currentList());
    // Caught up: the next round sends nothing and drops nothing more.
    const idle = await charlie.sync(running.url).syncOnce();
    assert.deepEqual([idle.bundles, idle.records, idle.dropped], [0, 0, []]);
  });
});
