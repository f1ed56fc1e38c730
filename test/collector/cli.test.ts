/**
 * `imakeep run`, `imakeep log`, `imakeep status` as processes: the daemon removes records while
 * records arrive; `log` through the daemon's socket and, after SIGTERM, from the store + kernel,
 * equals the emulator's oracle (binary SHA-1, SHA-256, ASCII); `status` reports it.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeBinaryList, parseBinaryList } from '../../src/ima/index.js';
import { replayPcr10, startRig, tpmPcr10 } from './_rig.js';
import { runCli, startDaemon, waitFor } from './_daemon.js';

describe('imakeep run / log / status', () => {
  it('daemon removes, log equals the oracle through the socket and from the store', async () => {
    const rig = await startRig({ mux: true });
    await rig.store.close();
    try {
      const daemon = startDaemon(rig, ['--flavor', 'n', '--interval', '150', '--cycle-at-records', '400']);
      try {
        for (let i = 0; i < 6; i++) {
          await rig.append(500);
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.ok(await waitFor(() => rig.emu.stats().recordsDeleted >= 2500, 20_000), `removed ${rig.emu.stats().recordsDeleted}`);
        const viaSocket = await runCli(['log', '--store', rig.storeDir]);
        assert.equal(viaSocket.code, 0, viaSocket.stderr);
        assert.ok(viaSocket.stdout.equals(rig.oracle()), 'log through the daemon equals the oracle');
        const status = await runCli(['status', '--store', rig.storeDir, '--json']);
        assert.equal(status.code, 0, status.stderr);
        const s: unknown = JSON.parse(status.stdout.toString('utf8'));
        assert.ok(typeof s === 'object' && s !== null && 'source' in s && s.source === 'daemon');
        assert.ok('collector' in s && typeof s.collector === 'object' && s.collector !== null && 'removed' in s.collector);
        assert.ok(Number(s.collector.removed) >= 2500);
        // The daemon's own memory, for watching Invariant 4 from outside.
        assert.ok('process' in s.collector && typeof s.collector.process === 'object' && s.collector.process !== null);
        const proc = s.collector.process;
        assert.ok('heapUsedBytes' in proc && 'rssBytes' in proc);
        assert.ok(Number(proc.heapUsedBytes) > 1e6 && Number(proc.rssBytes) > Number(proc.heapUsedBytes), JSON.stringify(proc));
        const badFrom = await runCli(['log', '--store', rig.storeDir, '--from', '999999']);
        assert.equal(badFrom.code, 1);
        assert.match(badFrom.stderr, /SERVE_RANGE/);
      } finally {
        daemon.kill('SIGTERM');
      }
      const exit = await daemon.exited;
      assert.equal(exit.code, 0, exit.stderr);
      assert.match(exit.stdout.toString('utf8'), /flavour n/);

      const stored = ['--store', rig.storeDir, '--securityfs', rig.emu.securityfsRoot, '--boot-id-file', rig.bootIdPath];
      const sha1 = await runCli(['log', ...stored]);
      assert.equal(sha1.code, 0, sha1.stderr);
      assert.ok(sha1.stdout.equals(rig.oracle()), 'standalone log (store + kernel) equals the oracle');
      const sha256 = await runCli(['log', ...stored, '--bank', 'sha256']);
      assert.ok(sha256.stdout.equals(Buffer.from(encodeBinaryList(parseBinaryList(rig.oracle()), { bank: 'sha256' }))));
      const ascii = await runCli(['log', ...stored, '--format', 'ascii']);
      assert.ok(ascii.stdout.equals(rig.oracleAscii()));
      const from = await runCli(['log', ...stored, '--from', '1234']);
      assert.ok(from.stdout.equals(Buffer.from(encodeBinaryList(parseBinaryList(rig.oracle()).slice(1234)))));
      assert.deepEqual(replayPcr10(sha1.stdout), await tpmPcr10(rig.tpm));
      const storeOnly = await runCli(['log', '--store', rig.storeDir]);
      assert.ok(rig.oracle().subarray(0, storeOnly.stdout.length).equals(storeOnly.stdout), 'without --securityfs: the stored prefix');

      const offline = await runCli(['status', '--store', rig.storeDir, '--json']);
      const o: unknown = JSON.parse(offline.stdout.toString('utf8'));
      assert.ok(typeof o === 'object' && o !== null && 'source' in o && o.source === 'store' && 'boots' in o && Array.isArray(o.boots));
      assert.equal(o.boots.length, 1);
      assert.equal(o.boots[0].removed, rig.emu.stats().recordsDeleted);
    } finally {
      await rig.stop();
    }
  });
});
