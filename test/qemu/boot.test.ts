// Boots Debian's real kernel (IMA built in) under QEMU/TCG with swtpm, runs the guest plan of
// hw/qemu (slab calibration, the project's securityfs probe and `imakeep replay` in the guest),
// and checks what comes back. One boot (~1 min on 2 cores) serves every test below.
// IMAKEEP_QEMU_KERNEL=<package or bzImage path> picks another kernel (default: linux-image-amd64's).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DEFAULT_SLAB_ROUND_DIRS } from '../../hw/qemu/guest-init.js';
import { probedRemoval } from '../../hw/qemu/probe.js';
import { runImaGuest, type GuestRunReport } from '../../hw/qemu/run.js';

const projectRoot = join(import.meta.dirname, '..', '..', '..');
const FILES_PER_ROUND = 5000;
const BOOT_TIMEOUT_MS = 8 * 60_000;
const workDir = mkdtempSync(join(tmpdir(), 'imakeep-qemu-test-'));
const stageLines: string[] = [];
let report: GuestRunReport | undefined;

before(
  async () => {
    report = await runImaGuest({
      projectRoot,
      workDir,
      filesPerRound: FILES_PER_ROUND,
      ...(process.env.IMAKEEP_QEMU_KERNEL === undefined ? {} : { kernel: process.env.IMAKEEP_QEMU_KERNEL }),
      onStage: (s) => stageLines.push(`${s.name}: host ${s.hostSeconds.toFixed(1)} s, guest ${s.guestUptimeSeconds} s`),
    });
  },
  { timeout: BOOT_TIMEOUT_MS },
);

after(() => rmSync(workDir, { recursive: true, force: true }));

function done(): GuestRunReport {
  assert.ok(report !== undefined, 'the boot did not complete');
  return report;
}

/** Kernels before 7.2 have no removal interface (kernel-ima.md §1.1). */
function before72(release: string): boolean {
  const [major = 0, minor = 0] = release.split(/[.-]/).map(Number);
  return major < 7 || (major === 7 && minor < 2);
}

test('the guest reaches userspace and sends its results in time', (t) => {
  const r = done();
  for (const line of stageLines) t.diagnostic(line);
  t.diagnostic(`kernel ${r.kernel.debianPackage ?? r.kernel.vmlinuz} (${r.kernel.release}), CONFIG_IMA_STAGING ${r.kernel.imaStaging}; initramfs ${(r.initramfs.bytes / 2 ** 20).toFixed(0)} MiB in ${r.initramfs.seconds.toFixed(1)} s`);
  const userspace = r.stages.find((s) => s.name === 'userspace');
  assert.ok(userspace !== undefined);
  assert.ok(userspace.hostSeconds < 60, `userspace after ${userspace.hostSeconds} s`);
  assert.deepEqual(
    r.stages.map((s) => s.name),
    ['userspace', ...DEFAULT_SLAB_ROUND_DIRS.map((_, i) => `slab-round-${i + 1}`), 'node-first-start', 'node-second-start', 'node-probe', 'node-replay', 'captured', 'sent'],
  );
});

test('the probe (the project\'s and the file modes) finds no removal interface before 7.2', (t) => {
  const r = done();
  const probe = r.guest.nodeSteps.find((s) => s.name === 'probe');
  assert.ok(probe !== undefined);
  assert.equal(probe.status, 0, probe.stderr);
  t.diagnostic(`guest probe: ${probe.stdout}`);
  const removal = probedRemoval(probe.stdout);
  if (!before72(r.kernel.release)) {
    // 7.2+: the project's probe must pick one of the flavours the file modes allow.
    assert.ok(removal !== null && (r.guest.flavours as string[]).includes(removal), `${String(removal)} vs ${r.guest.flavours.join(',')}`);
  } else {
    assert.equal(removal, 'none');
    assert.deepEqual(r.guest.flavours, ['none']);
    assert.equal(r.guest.securityfsModes.get('binary_runtime_measurements'), 0o440);
  }
});

test('the fetched log replays to the guest\'s and the host\'s PCRs, with imakeep and with evmctl', (t) => {
  const r = done();
  for (const c of r.checks) t.diagnostic(`${c.tool} vs ${c.pcrSource} PCRs: ${c.ok ? 'ok' : 'FAILED'}: ${c.output.split('\n').pop() ?? ''}`);
  assert.deepEqual(
    r.checks.map((c) => [c.tool, c.pcrSource, c.ok]),
    [['evmctl', 'guest', true], ['evmctl', 'host', true], ['imakeep', 'guest', true], ['imakeep', 'host', true]],
  );
  const guestReplay = r.guest.nodeSteps.find((s) => s.name === 'replay');
  assert.ok(guestReplay !== undefined);
  assert.equal(guestReplay.status, 0, guestReplay.stderr);
  assert.match(guestReplay.stdout, /^sha1: match \(native\)$/m);
  assert.match(guestReplay.stdout, /^sha256: match \(native\)$/m);
});

test('imakeep convert re-encodes the fetched list byte for byte as the kernel\'s ASCII and binary lists', () => {
  assert.deepEqual(done().formatChecks, [
    { to: 'ascii', ok: true, firstDifference: -1 },
    { to: 'binary', ok: true, firstDifference: -1 },
  ]);
});

test('PCRs read in the guest before and after the copy, and from the host after the VM stopped, are equal', () => {
  const r = done();
  assert.deepEqual(Object.keys(r.hostPcrs).sort(), ['sha1', 'sha256']);
  assert.deepEqual(r.guest.pcrsBefore, r.guest.pcrsAfter);
  assert.deepEqual(r.guest.pcrsBefore, r.hostPcrs);
  assert.notEqual(r.hostPcrs['sha256']?.[10], '0'.repeat(64));
});

test('every file read added one record; the count file matches the list', () => {
  const r = done();
  const rounds = DEFAULT_SLAB_ROUND_DIRS.length;
  assert.deepEqual(r.guest.slabRounds.map((s) => s.records), Array<number>(rounds).fill(FILES_PER_ROUND));
  assert.ok(r.guest.records >= rounds * FILES_PER_ROUND, String(r.guest.records));
  assert.ok(r.guest.records < rounds * FILES_PER_ROUND + 2000, String(r.guest.records));
  assert.equal(r.guest.violations, 0);
  const replayed = /^records (\d+)$/m.exec(r.checks.find((c) => c.tool === 'imakeep')?.output ?? '');
  assert.equal(Number(replayed?.[1]), r.guest.records);
});

test('slab bytes per record are in the range the kernel structures allow', (t) => {
  const r = done();
  r.guest.slabRounds.forEach((s, i) => {
    t.diagnostic(
      `round ${i + 1} (${DEFAULT_SLAB_ROUND_DIRS[i]}): kmalloc ${s.kmallocObjectBytesPerRecord.toFixed(1)} B/record, all caches ${s.allCachesObjectBytesPerRecord.toFixed(1)}, meminfo Slab ${s.meminfoSlabBytesPerRecord.toFixed(1)}; ` +
        s.topCaches.slice(0, 4).map((c) => `${c.name} ${c.bytesPerRecord.toFixed(1)}`).join(', '),
    );
  });
  const [short1, short2, long1, long2, rewrite] = r.guest.slabRounds;
  assert.ok(short1 && short2 && long1 && long2 && rewrite);
  // kernel-ima.md §4.1: queue entry 64 + template entry 64 + 2 digests 192 + d-ng 64 + n-ng
  // (16 for 12-byte names, 64 for 53-byte names) = 400 / 448 per record; a new inode adds its
  // cached file hash (kmalloc-64) and an iint_cache object (128).
  const near = (value: number, expected: number, slack: number): boolean => Math.abs(value - expected) <= slack;
  assert.ok(near(rewrite.kmallocObjectBytesPerRecord, 400, 24), `re-measured files: ${rewrite.kmallocObjectBytesPerRecord}`);
  for (const s of [short1, short2]) assert.ok(near(s.kmallocObjectBytesPerRecord, 464, 24), `short names: ${s.kmallocObjectBytesPerRecord}`);
  for (const s of [long1, long2]) assert.ok(near(s.kmallocObjectBytesPerRecord, 512, 24), `long names: ${s.kmallocObjectBytesPerRecord}`);
  for (const s of r.guest.slabRounds) assert.ok(s.meminfoSlabBytesPerRecord > 300 && s.meminfoSlabBytesPerRecord < 800, `Slab ${s.meminfoSlabBytesPerRecord}`);
});
