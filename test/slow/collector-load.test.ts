/**
 * The collector under load and adverse conditions (slow suite):
 * - 100k records through `imakeep run` with removal: the kernel list stays bounded, the log
 *   equals the oracle and replays to the TPM;
 * - readers hammering the list (EBUSY storms) while the daemon removes;
 * - ENOSPC on a small tmpfs store: removal stops, the kernel keeps its records, the condition is
 *   reported, work resumes when space returns (remount larger);
 * - memory after 10k and after 1M records within one fixed bound (bench/ingest.ts's harness: the
 *   FUSE emulator without TPM extends and the software TPM of hw/soft-tpm.ts).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeBinaryList, parseBinaryList } from '../../src/ima/index.js';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { daemonPaths } from '../../src/daemon/index.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { collectLog, replayPcr10, startRig, tpmPcr10, type Rig } from '../collector/_rig.js';
import { runCli, startDaemon, waitFor } from '../collector/_daemon.js';
import { runIngestInChild } from '../../bench/ingest.js';

async function assertCliLogIsOracle(rig: Rig, everyFormat = false): Promise<void> {
  const stored = ['--store', rig.storeDir, '--securityfs', rig.emu.securityfsRoot, '--boot-id-file', rig.bootIdPath];
  const log = await runCli(['log', ...stored]);
  assert.equal(log.code, 0, log.stderr);
  assert.ok(log.stdout.equals(rig.oracle()), 'log equals the oracle');
  assert.deepEqual(replayPcr10(log.stdout), await tpmPcr10(rig.tpm), 'the log replays to the TPM');
  if (!everyFormat) return;
  const sha256 = await runCli(['log', ...stored, '--bank', 'sha256']);
  assert.ok(sha256.stdout.equals(Buffer.from(encodeBinaryList(parseBinaryList(rig.oracle()), { bank: 'sha256' }))), 'binary SHA-256 log');
  const ascii = await runCli(['log', ...stored, '--format', 'ascii']);
  assert.ok(ascii.stdout.equals(rig.oracleAscii()), 'ASCII log');
}

/** Runs the daemon on the rig while `feed` appends, then stops it (SIGTERM, exit 0). */
async function withDaemon(rig: Rig, flavor: string, feed: () => Promise<void>): Promise<string> {
  const daemon = startDaemon(rig, ['--flavor', flavor, '--interval', '200', '--cycle-at-records', '2000']);
  try {
    await feed();
    const total = rig.emu.stats().recordsTotal;
    const cycles = (): number => daemon.output().split('\ncycle ').length - 1;
    const before = cycles();
    assert.ok(await waitFor(() => cycles() >= before + 2 && rig.emu.stats().recordsDeleted >= total - 2000, 60_000), 'the daemon caught up');
  } finally {
    daemon.kill('SIGTERM');
  }
  const exit = await daemon.exited;
  assert.equal(exit.code, 0, exit.stderr);
  return exit.stdout.toString('utf8');
}

describe('collector under load', () => {
  const loads = [
    { flavor: 'n', flushHtable: false },
    { flavor: 'staged', flushHtable: false },
    { flavor: 'staged', flushHtable: true },
  ] as const;
  for (const load of loads) {
    it(`100k records with removal (imakeep run, flavour ${load.flavor}${load.flushHtable ? ', ima_flush_htable' : ''})`, async (t) => {
      const rig = await startRig({ mux: true, seed: 100, flushHtable: load.flushHtable });
      await rig.store.close();
      try {
        let maxKernel = 0;
        await withDaemon(rig, load.flavor, async () => {
          for (let appended = 0; appended < 100_000; appended += 2000) {
            await rig.append(2000);
            const s = rig.emu.stats();
            maxKernel = Math.max(maxKernel, s.recordsCurrent + s.recordsStaged);
          }
        });
        t.diagnostic(`100k: kernel list peaked at ${maxKernel} records; removed ${rig.emu.stats().recordsDeleted}`);
        assert.ok(maxKernel < 20_000, `kernel list bounded (peak ${maxKernel})`);
        await assertCliLogIsOracle(rig, true);
      } finally {
        await rig.stop();
      }
    });
  }

  it('EBUSY storm: two readers cat the list in a loop while the daemon removes', async (t) => {
    const rig = await startRig({ mux: true, seed: 5 });
    await rig.store.close();
    const list = join(rig.emu.imaDir, 'binary_runtime_measurements');
    const hammers = [0, 1].map(() => spawn('sh', ['-c', `while :; do cat ${list} > /dev/null 2>&1; done`], { stdio: 'ignore' }));
    try {
      const out = await withDaemon(rig, 'n', async () => {
        for (let i = 0; i < 10; i++) {
          await rig.append(1000);
          await new Promise((r) => setTimeout(r, 200));
        }
      });
      for (const h of hammers) h.kill('SIGKILL');
      const busy = out.split('\n').filter((l) => l.includes('KERNEL_EBUSY')).length;
      const status: unknown = JSON.parse(readFileSync(daemonPaths(rig.storeDir).statusFile, 'utf8'));
      const metrics = typeof status === 'object' && status !== null && 'metrics' in status ? status.metrics : undefined;
      const retries = typeof metrics === 'object' && metrics !== null && 'busyRetries' in metrics ? Number(metrics.busyRetries) : NaN;
      t.diagnostic(`EBUSY storm: ${retries} EBUSY retries, ${busy} cycles gave up with KERNEL_EBUSY; removed ${rig.emu.stats().recordsDeleted} of ${rig.emu.stats().recordsTotal}`);
      assert.ok(retries > 0, 'the readers did collide with the writer');
      assert.ok(rig.emu.stats().recordsDeleted > 0);
      await assertCliLogIsOracle(rig);
    } finally {
      for (const h of hammers) h.kill('SIGKILL');
      await rig.stop();
    }
  });

  it('ENOSPC on a 1 MiB tmpfs store: removal stops, the kernel keeps its records, resumes after remount', async (t) => {
    const mnt = mkdtempSync(join(tmpdir(), 'imakeep-enospc-'));
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    if (mount.status !== 0) {
      rmSync(mnt, { recursive: true, force: true });
      t.skip(`cannot mount tmpfs (needs root): ${mount.stderr.toString()}`);
      return;
    }
    try {
      mkdirSync(join(mnt, 'store'));
      const rig = await startRig({ storeDir: join(mnt, 'store'), seed: 8 });
      try {
        const collector = await rig.collector({ flavor: 'n' });
        let failure: unknown;
        for (let i = 0; i < 40 && failure === undefined; i++) {
          await rig.append(1000);
          failure = await collector.runOnce().then(() => undefined, (e: unknown) => e);
        }
        assert.ok(failure instanceof Error && 'code' in failure && failure.code === 'STORE_WRITE_FAILED', `store filled: ${String(failure)}`);
        const deletedAtFull = rig.emu.stats().recordsDeleted;
        for (let i = 0; i < 3; i++) {
          await rig.append(1000);
          await assert.rejects(collector.runOnce(), (e: unknown) => e instanceof Error && 'code' in e && e.code === 'STORE_WRITE_FAILED');
        }
        const s = collector.status();
        assert.equal(s.condition?.code, 'STORE_WRITE_FAILED');
        assert.ok((s.metrics.errors.STORE_WRITE_FAILED ?? 0) >= 4);
        assert.equal(rig.emu.stats().recordsDeleted, deletedAtFull, 'nothing removed while the store is full');
        assert.equal(rig.emu.stats().recordsCurrent, rig.emu.stats().recordsTotal - deletedAtFull, 'the kernel keeps its records');
        assert.ok(s.drained - s.stored <= 4096 + 1000, `open chunk bounded: ${s.drained - s.stored} records unsealed`);
        t.diagnostic(`ENOSPC: full after ${s.stored} stored, ${rig.emu.stats().recordsTotal} appended`);
        assert.equal(spawnSync('mount', ['-o', 'remount,size=64m', mnt]).status, 0);
        await collector.runOnce();
        await collector.runOnce();
        assert.equal(collector.status().condition, null);
        assert.equal(rig.emu.stats().recordsDeleted, rig.emu.stats().recordsTotal, 'removal resumed');
        const sha1 = await collectLog(collector, { format: 'binary', bank: 'sha1' });
        assert.ok(sha1.equals(rig.oracle()));
        await collector.close();
      } finally {
        await rig.stop();
      }
    } finally {
      spawnSync('umount', ['-l', mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });

  it('memory after 10k and after 1M records stays within one fixed bound', (t) => {
    // In a child process started as the daemon is (DAEMON_NODE_FLAGS, DAEMON_MALLOC_ENV): the
    // test process itself carries the other soaks' memory, which says nothing about the collector.
    const result = runIngestInChild({ records: 1_000_000, batch: 5000, flavor: 'n', sampleAt: [10_000, 1_000_000] });
    const at10k = result.memory.find((m) => m.records === 10_000);
    const at1m = result.memory.find((m) => m.records === 1_000_000);
    assert.ok(at10k !== undefined && at1m !== undefined);
    t.diagnostic(`memory 10k: ${JSON.stringify(at10k)}; 1M: ${JSON.stringify(at1m)}; ${result.recordsPerSecond} records/s`);
    assert.equal(result.removed, 1_000_000);
    // One bound for both points: measured 80-94 MiB RSS and 8-10 MiB heap (bench/ingest.ts).
    const HEAP_BOUND_MIB = 32;
    const RSS_BOUND_MIB = 160;
    for (const m of [at10k, at1m]) {
      assert.ok(m.heapUsedMiB <= HEAP_BOUND_MIB, `heap ${m.heapUsedMiB} MiB at ${m.records}`);
      assert.ok(m.rssMiB <= RSS_BOUND_MIB, `RSS ${m.rssMiB} MiB at ${m.records}`);
    }
    // Anonymous memory does not follow the log (file-backed RSS is LevelDB's capped table cache).
    assert.ok(at1m.rssAnonKiB <= at10k.rssAnonKiB + 16 * 1024, `RssAnon ${at10k.rssAnonKiB} → ${at1m.rssAnonKiB} KiB`);
  });
});
