/**
 * The examples run: the gateway embedding the real collector over the FUSE securityfs emulator
 * and swtpm (test/collector's rig), with the Keylime-style verifier pulling from it; the offline
 * device spooling bundles and syncing them through cuts (the real collector on the same rig:
 * test/serve/_collected.ts); and the Keylime-style verifier's command line.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Gateway } from '../../examples/gateway.js';
import { KeylimeStyleVerifier } from '../../examples/keylime-verifier.js';
import { spoolBundles, spooled, startReceiver, syncSpool } from '../../examples/offline-sync.js';
import { startApiServer } from '../../src/serve/index.js';
import { TpmQuoter, publicKeyFromTpm2b } from '../../src/tpm/index.js';
import { RIG_BANKS, startRig, type Rig } from '../collector/_rig.js';
import { CollectedDevice } from './_collected.js';
import { get, json } from './_http.js';
import { fetchAll } from '../verify/_bundles.js';
import { EvidenceVerifier } from '../../src/verify/index.js';

describe('examples/gateway.ts with examples/keylime-verifier.ts (real collector, emulator, swtpm)', () => {
  let rig: Rig;
  let gateway: Gateway;

  before(async () => {
    rig = await startRig({ seed: 11 });
    gateway = await Gateway.start({
      storeDir: join(rig.work, 'gateway-store'),
      tpm: rig.tpm,
      socket: join(rig.work, 'gateway.sock'),
      securityfsRoot: rig.emu.securityfsRoot,
      bootIdPath: rig.bootIdPath,
      cmdlinePath: rig.cmdlinePath,
      banks: RIG_BANKS,
    });
  });

  let gatewayStopped = false;

  after(async () => {
    if (!gatewayStopped) await gateway?.stop();
    await rig?.stop();
  });

  it('serves the untrimmed list while the collector removes, and a Keylime-style verifier follows it', async () => {
    const socket = { socket: join(rig.work, 'gateway.sock') };
    // The AK is the TPM's deterministic endorsement primary: the enrolled key a verifier trusts.
    const ak = publicKeyFromTpm2b(await rig.tpm.withAk({ alg: 'ecc', hierarchy: 'endorsement' }, async (k) => k.public));
    const verifier = new KeylimeStyleVerifier(socket.socket, ak);
    for (const n of [300, 250, 120]) {
      await rig.append(n);
      await gateway.cycle();
      const round = await verifier.round();
      assert.equal(round.entry + round.lines, verifier.next);
    }
    await rig.append(40); // not collected yet: only in the kernel
    const binary = await get(socket, '/v1/log');
    assert.ok(binary.body.equals(rig.oracle()), 'binary list = every record ever appended');
    const ascii = await get(socket, '/v1/log?format=ascii');
    assert.ok(ascii.body.equals(rig.oracleAscii()), 'ASCII list = every record ever appended');
    const round = await verifier.round();
    assert.equal(verifier.next, 710, `${JSON.stringify(round)}`);
    const status = json(await get(socket, '/v1/status'));
    assert.ok(typeof status === 'object' && status !== null && 'collector' in status);
    const metrics = (await get(socket, '/metrics')).body.toString();
    assert.match(metrics, /imakeep_removed_records \d+/);
    const removed = Number(/imakeep_removed_records (\d+)/.exec(metrics)?.[1]);
    assert.ok(removed > 0, `the collector removed ${removed} records`);
    // The real collector's checkpoints verify offline: quotes, nonce chain, clock, replay, chain.
    const verifierOffline = new EvidenceVerifier({ trustedAk: ak });
    const bundles = await fetchAll(socket, undefined, 16_000);
    const reports = bundles.map((b) => verifierOffline.verify(b.bytes));
    const checked = reports.flatMap((r) => r.segments.flatMap((seg) => seg.checkpoints));
    assert.ok(checked.length >= 3, `checkpoints verified: ${checked.join(',')}`);
    assert.equal(reports.at(-1)?.segments.at(-1)?.to, (await gateway.store.lastCheckpoint(0))?.count);
  });

  it('with the gateway stopped, `imakeep serve --securityfs` serves the same whole list (store + kernel)', async () => {
    await rig.append(25);
    await gateway.stop();
    gatewayStopped = true;
    const socket = join(rig.work, 'standalone.sock');
    const args = ['serve', '--store', join(rig.work, 'gateway-store'), '--socket', socket, '--securityfs', rig.emu.securityfsRoot, '--boot-id-file', rig.bootIdPath];
    const child = spawn(process.execPath, [join(process.cwd(), 'dist', 'src', 'cli.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => (d.toString().includes('imakeep serve:') ? resolve() : undefined));
        child.once('exit', (code) => reject(new Error(`serve exited with ${String(code)}`)));
      });
      const binary = await get({ socket }, '/v1/log');
      assert.ok(binary.body.equals(rig.oracle()), `${binary.body.length} bytes served, oracle ${rig.oracle().length}`);
      const ascii = await get({ socket }, '/v1/log?format=ascii&from=100');
      const oracleLines = rig.oracleAscii().toString('latin1').split('\n').slice(100).join('\n');
      assert.equal(ascii.body.toString('latin1'), oracleLines);
    } finally {
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    }
  });
});

describe('examples/offline-sync.ts (real collector, swtpm and store)', () => {
  let device: CollectedDevice;
  let work: string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'imakeep-offline-'));
    device = await CollectedDevice.start({ chunkRecords: 40 });
  });

  after(async () => {
    await device?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('bundles spooled offline are uploaded when the network returns, resuming after a cut', async () => {
    const spool = join(work, 'spool');
    const receiver = await startReceiver(publicKeyFromTpm2b((await device.ak()).public));
    try {
      // Weeks offline: cycles, a reboot, more cycles; the device spools as it goes.
      for (let i = 0; i < 3; i++) {
        await device.cycle(120);
        await spoolBundles(device.store, spool, { maxBytes: 20_000 });
      }
      await device.reboot();
      await device.cycle(90);
      await spoolBundles(device.store, spool, { maxBytes: 20_000 });
      const files = spooled(spool).length;
      assert.ok(files >= 4, `${files} files`);
      // The network returns, and drops in the middle of the second upload.
      assert.equal(await syncSpool(spool, receiver.url, { store: device.store, cut: { file: 1, afterBytes: 500 } }), 1);
      assert.equal(spooled(spool).length, files - 1);
      // It returns again: the rest goes, starting with the file that was cut.
      assert.equal(await syncSpool(spool, receiver.url, { store: device.store }), files - 1);
      assert.equal(spooled(spool).length, 0);
      const segments = receiver.accepted.flatMap((r) => r.segments);
      assert.equal(segments.filter((s) => s.boot === 0).at(-1)?.to, device.records(0).length);
      assert.equal(segments.filter((s) => s.boot === 1).at(-1)?.to, (await device.store.lastCheckpoint(1))?.count);
      // The acknowledgements reached the store: boot 0 may now be dropped by retention.
      assert.equal((await device.store.bootRecord(0)).exported?.cursor, device.records(0).length);
      await device.store.dropBoot(0, { exportedAck: true, olderThanMs: 0 });
      // Nothing new: spooling writes nothing, syncing sends nothing.
      assert.equal(await spoolBundles(device.store, spool, { maxBytes: 20_000 }), 0);
    } finally {
      await receiver.close();
    }
  });
});

describe('examples/keylime-verifier.ts command line', () => {
  it('runs rounds against a device and prints them', async () => {
    const work = mkdtempSync(join(tmpdir(), 'imakeep-klv-'));
    const device = await CollectedDevice.start();
    const socket = join(work, 'api.sock');
    const server = await startApiServer({ store: device.store, tail: device.tail(), quotes: new TpmQuoter(device.tpm) }, { socket });
    try {
      await device.cycle(80);
      await device.measure(5);
      const akPem = join(work, 'ak.pem');
      writeFileSync(akPem, String(publicKeyFromTpm2b((await device.ak()).public).export({ type: 'spki', format: 'pem' })));
      // A child process (the server answers from this one, so never spawnSync here).
      const child = await new Promise<{ status: number | null; stdout: string }>((resolve) => {
        const p = spawn(process.execPath, [join(process.cwd(), 'dist', 'examples', 'keylime-verifier.js'), '--socket', socket, '--ak', akPem, '--rounds', '2']);
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.stderr.on('data', (d: Buffer) => (out += d.toString()));
        p.on('close', (status) => resolve({ status, stdout: out }));
      });
      assert.equal(child.status, 0, child.stdout);
      assert.match(child.stdout, /^round 0: entries 0\.\.84, quote matched at 85/m);
      assert.match(child.stdout, /^round 1: entries 85\.\.84, quote matched at 85/m);
    } finally {
      await server.close();
      await device.close();
      rmSync(work, { recursive: true, force: true });
    }
  });
});
