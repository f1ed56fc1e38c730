// Boots Debian's real kernel (IMA built in) under QEMU/TCG with swtpm, runs the guest plan of
// hw/qemu (slab calibration, the project's securityfs probe and `imakeep replay` in the guest,
// then the collector against the real securityfs and /dev/tpmrm0 while a workload measures files,
// `imakeep export` and `imakeep log`), and checks what comes back. Before the collector, the guest
// enrolls through /dev/tpmrm0 (request and answer in the guest, challenge and finish on the host,
// hw/qemu/enroll.ts), and the host verifies the guest's bundle with the enrollment record. One boot (~3 min on 2 cores)
// serves every test below.
// IMAKEEP_QEMU_KERNEL=<package or bzImage path> picks another kernel (default: linux-image-amd64's).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  COLLECTOR_STEP_NAMES,
  collectorNodeSteps,
  GUEST_DEVICE_ID,
  loadCollectorResults,
  recordIndexesUnder,
  WORKLOAD_BATCH_FILES,
  WORKLOAD_DIR,
  type CollectorGuestResults,
} from '../../hw/qemu/collector.js';
import { ENROLL_STEP_NAMES, enrollNodeSteps, HostEnrollmentVerifier, readHostTpmFacts, type HostEnrollment, type HostTpmFacts } from '../../hw/qemu/enroll.js';
import { DEFAULT_SLAB_ROUND_DIRS } from '../../hw/qemu/guest-init.js';
import { probedRemoval } from '../../hw/qemu/probe.js';
import { runImaGuest, type GuestRunReport } from '../../hw/qemu/run.js';
import { decodeEnrollmentRecord, trustedAkOfEnrollment } from '../../src/enroll/index.js';
import { decodeBundle, decodeCheckpoint } from '../../src/store/index.js';
import { parseTpm2bPublic, tpmName } from '../../src/tpm/index.js';
import {
  builtReplayCli,
  evmctlCheck,
  imakeepConvertChecks,
  imakeepReplayCheck,
  imakeepVerifyBundleCheck,
  type BundleCheck,
  type FormatCheck,
  type LogCheck,
} from '../../hw/qemu/verify.js';

const projectRoot = join(import.meta.dirname, '..', '..', '..');
const FILES_PER_ROUND = 5000;
/**
 * The boot's limit: ~3 min on 2 idle cores with the enrollment (hw/qemu/README.md); the guest's CPU
 * under TCG is all host CPU, so a machine shared by other jobs stretches it several-fold (8 min
 * were exceeded at a load average of 24 on 2 cores); QEMU's own limit is a minute under it, so the
 * boot fails with its console tail rather than the hook's timeout.
 */
const BOOT_TIMEOUT_MS = 12 * 60_000;
const workDir = mkdtempSync(join(tmpdir(), 'imakeep-qemu-test-'));
const stageLines: string[] = [];
let report: GuestRunReport | undefined;
/** The collector's results and the host's checks of the log it served and the bundle it exported. */
let collector: { results: CollectorGuestResults; servedChecks: LogCheck[]; servedFormatChecks: FormatCheck[]; bundleCheck: BundleCheck } | undefined;
/** The enrollment: the host's side, what tpm2-tools read from the guest's TPM, the bundle verified with the record. */
let enrollment: { host: HostEnrollment; tpm: HostTpmFacts; bundleCheck: BundleCheck } | undefined;

before(
  async () => {
    const cli = builtReplayCli(projectRoot);
    assert.ok(cli !== null, 'the CLI is not built');
    const verifier = new HostEnrollmentVerifier(cli, workDir);
    let tpmFacts: HostTpmFacts | undefined;
    report = await runImaGuest({
      projectRoot,
      workDir,
      filesPerRound: FILES_PER_ROUND,
      timeoutSeconds: BOOT_TIMEOUT_MS / 1000 - 60,
      ...(process.env.IMAKEEP_QEMU_KERNEL === undefined ? {} : { kernel: process.env.IMAKEEP_QEMU_KERNEL }),
      // Enrollment first: its node processes add records the collector then stores like any others.
      extraNodeSteps: [...enrollNodeSteps(), ...collectorNodeSteps()],
      exchange: verifier.exchange,
      withHostTpm: async (port) => {
        tpmFacts = await readHostTpmFacts(port, join(workDir, 'host-ek'));
      },
      onStage: (s) => stageLines.push(`${s.name}: host ${s.hostSeconds.toFixed(1)} s, guest ${s.guestUptimeSeconds} s`),
    });
    const results = loadCollectorResults(report.guest.dir);
    collector = {
      results,
      servedChecks: [
        await evmctlCheck('guest', results.servedBinary, results.pcrFilesAtServe),
        await evmctlCheck('host', results.servedBinary, report.hostPcrFiles),
        await imakeepReplayCheck(cli, 'guest', results.servedBinary, results.pcrFilesAtServe),
        await imakeepReplayCheck(cli, 'host', results.servedBinary, report.hostPcrFiles),
      ],
      // The served ASCII list came back as size and SHA-256: convert's output is compared with the
      // kernel's final ASCII list, whose digest the test compares with the served one.
      servedFormatChecks: await imakeepConvertChecks(cli, results.servedBinary, report.guest.asciiLog),
      bundleCheck: await imakeepVerifyBundleCheck(cli, results.bundle, report.hostAkPem === null ? [] : ['--ak', report.hostAkPem]),
    };
    assert.ok(tpmFacts !== undefined, 'tpm2-tools did not read the guest TPM');
    const host = await verifier.finish(report.guest.dir);
    enrollment = { host, tpm: tpmFacts, bundleCheck: await imakeepVerifyBundleCheck(cli, results.bundle, ['--enrollment', host.record]) };
  },
  { timeout: BOOT_TIMEOUT_MS },
);

after(() => rmSync(workDir, { recursive: true, force: true }));

function done(): GuestRunReport {
  assert.ok(report !== undefined, 'the boot did not complete');
  return report;
}

function enrolled(): NonNullable<typeof enrollment> {
  assert.ok(enrollment !== undefined, 'the enrollment was not finished');
  return enrollment;
}

function collected(): NonNullable<typeof collector> {
  assert.ok(collector !== undefined, 'the collector results were not checked');
  return collector;
}

const sha256Hex = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** Indexes of the workload's records in the kernel's final ASCII list. */
function workloadIndexes(r: GuestRunReport): number[] {
  return recordIndexesUnder(readFileSync(r.guest.asciiLog, 'latin1'), WORKLOAD_DIR);
}

/** Kernels before 7.2 have no removal interface (docs/kernel.md#feature-detection). */
function before72(release: string): boolean {
  const [major = 0, minor = 0] = release.split(/[.-]/).map(Number);
  return major < 7 || (major === 7 && minor < 2);
}

test('the guest reaches userspace and sends its results in time', (t) => {
  const r = done();
  for (const line of stageLines) t.diagnostic(line);
  t.diagnostic(`results sent back: ${(statSync(`${r.guest.dir}.tar.gz`).size / 2 ** 20).toFixed(1)} MiB tar.gz (base64 over ttyS1)`);
  t.diagnostic(`kernel ${r.kernel.debianPackage ?? r.kernel.vmlinuz} (${r.kernel.release}), CONFIG_IMA_STAGING ${r.kernel.imaStaging}; initramfs ${(r.initramfs.bytes / 2 ** 20).toFixed(0)} MiB in ${r.initramfs.seconds.toFixed(1)} s`);
  const userspace = r.stages.find((s) => s.name === 'userspace');
  assert.ok(userspace !== undefined);
  assert.ok(userspace.hostSeconds < 60, `userspace after ${userspace.hostSeconds} s`);
  assert.deepEqual(
    r.stages.map((s) => s.name),
    [
      'userspace',
      ...DEFAULT_SLAB_ROUND_DIRS.map((_, i) => `slab-round-${i + 1}`),
      'node-first-start',
      'node-second-start',
      'node-probe',
      'node-replay',
      ...[...ENROLL_STEP_NAMES, ...COLLECTOR_STEP_NAMES].map((n) => `node-${n}`),
      'captured',
      'sent',
    ],
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
  // Besides the rounds: the background workload of the collector step (one record per file it
  // wrote), and the executables and modules run (busybox, node, the project: < 2000).
  const workload = workloadIndexes(r).length;
  assert.equal(workload, collected().results.workloadFiles);
  assert.ok(r.guest.records - workload >= rounds * FILES_PER_ROUND, String(r.guest.records));
  assert.ok(r.guest.records - workload < rounds * FILES_PER_ROUND + 2000, String(r.guest.records));
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
  // docs/kernel.md#kernel-memory-per-record: queue entry 64 + template entry 64 + 2 digests 192 + d-ng 64 + n-ng
  // (16 for 12-byte names, 64 for 53-byte names) = 400 / 448 per record; a new inode adds its
  // cached file hash (kmalloc-64) and an iint_cache object (128).
  const near = (value: number, expected: number, slack: number): boolean => Math.abs(value - expected) <= slack;
  assert.ok(near(rewrite.kmallocObjectBytesPerRecord, 400, 24), `re-measured files: ${rewrite.kmallocObjectBytesPerRecord}`);
  for (const s of [short1, short2]) assert.ok(near(s.kmallocObjectBytesPerRecord, 464, 24), `short names: ${s.kmallocObjectBytesPerRecord}`);
  for (const s of [long1, long2]) assert.ok(near(s.kmallocObjectBytesPerRecord, 512, 24), `long names: ${s.kmallocObjectBytesPerRecord}`);
  for (const s of r.guest.slabRounds) assert.ok(s.meminfoSlabBytesPerRecord > 300 && s.meminfoSlabBytesPerRecord < 800, `Slab ${s.meminfoSlabBytesPerRecord}`);
});

test('the collector ran against the real securityfs and /dev/tpmrm0 with flavour none while the workload measured files', (t) => {
  const r = done();
  const { results } = collected();
  for (const name of COLLECTOR_STEP_NAMES) {
    const step = r.guest.nodeSteps.find((s) => s.name === name);
    assert.ok(step !== undefined, name);
    assert.equal(step.status, 0, `${name}: ${step.stderr}`);
  }
  const { duringWorkload: first, afterWorkload: second } = results.runs;
  t.diagnostic(`workload: ${results.workloadBatches} batches, ${results.workloadFiles} files`);
  for (const [name, run] of Object.entries(results.runs)) {
    t.diagnostic(`collector ${name}: flavour ${run.flavor} (${run.flavorReason}), stored ${run.stored}, checkpoint ${String(run.checkpoint)}, removed ${run.removed}, kernel count after ${run.kernelCountAfter}`);
    assert.equal(run.flavor, 'none');
    assert.equal(run.removed, 0);
  }
  assert.match(r.guest.nodeSteps.find((s) => s.name === 'collect-during-workload')?.stdout ?? '', /^imakeep run: boot 0 \(.+\), flavour none \(.+\), T=0, stored 0, serving /m);
  // First run: every record it stored came before its last drain; its checkpoint is a quote
  // matched by replay of a prefix of them (design.md, cycle).
  assert.ok(first.checkpoint !== null && first.checkpoint > 0 && first.checkpoint <= first.stored, JSON.stringify(first));
  assert.ok(first.stored <= first.kernelCountAfter, JSON.stringify(first));
  // The workload measured files before the first run's quote and after its last drain: records
  // arrived while the collector was collecting.
  const workload = workloadIndexes(r);
  assert.ok(workload.length > 0);
  assert.ok((workload[0] ?? Infinity) < first.checkpoint, `first workload record ${String(workload[0])}, checkpoint ${first.checkpoint}`);
  // More than the one batch that can start between the collector's exit and the stop file.
  const afterDrain = workload.filter((i) => i >= first.stored).length;
  const firstCheckpoint = first.checkpoint;
  t.diagnostic(`workload records before the first checkpoint ${workload.filter((i) => i < firstCheckpoint).length}, after the first run's stored end ${afterDrain}`);
  assert.ok(afterDrain > WORKLOAD_BATCH_FILES, `${afterDrain} workload records after stored ${first.stored}`);
  // Second run, the workload over: it stored and checkpointed everything, the workload included.
  assert.ok(second.checkpoint !== null && second.checkpoint > first.checkpoint, JSON.stringify(second));
  assert.ok(second.checkpoint > (workload.at(-1) ?? Infinity));
  assert.ok(second.checkpoint <= second.stored && second.stored <= second.kernelCountAfter, JSON.stringify(second));
  assert.ok(second.kernelCountAfter <= r.guest.records);
});

test('the served binary log is the kernel\'s list read right after it, byte for byte, and the final list', (t) => {
  const r = done();
  const { results } = collected();
  const served = readFileSync(results.servedBinary);
  const final = readFileSync(r.guest.binaryLog);
  t.diagnostic(`served ${served.length} B, kernel at that moment ${results.kernelBinaryAtServe.bytes} B, final ${final.length} B (${r.guest.records} records)`);
  assert.deepEqual({ bytes: served.length, sha256: sha256Hex(served) }, results.kernelBinaryAtServe);
  assert.ok(final.subarray(0, served.length).equals(served), 'the served log is not a prefix of the final list');
  // `imakeep log` ran last, its modules measured by its warm-up run: nothing was measured after.
  assert.equal(served.length, final.length);
});

test('the served ASCII log is the kernel\'s ASCII list read right after it, and imakeep convert of the served binary log', () => {
  const r = done();
  const { results, servedFormatChecks } = collected();
  const finalAscii = readFileSync(r.guest.asciiLog);
  assert.deepEqual(results.servedAscii, results.kernelAsciiAtServe);
  assert.deepEqual(results.servedAscii, { bytes: finalAscii.length, sha256: sha256Hex(finalAscii) });
  assert.deepEqual(servedFormatChecks, [
    { to: 'ascii', ok: true, firstDifference: -1 },
    { to: 'binary', ok: true, firstDifference: -1 },
  ]);
});

test('evmctl and imakeep replay accept the served log against the guest\'s PCRs and the host\'s tpm2_pcrread', (t) => {
  const { servedChecks } = collected();
  for (const c of servedChecks) t.diagnostic(`served log, ${c.tool} vs ${c.pcrSource} PCRs: ${c.ok ? 'ok' : 'FAILED'}: ${c.output.split('\n').pop() ?? ''}`);
  assert.deepEqual(
    servedChecks.map((c) => [c.tool, c.pcrSource, c.ok]),
    [['evmctl', 'guest', true], ['evmctl', 'host', true], ['imakeep', 'guest', true], ['imakeep', 'host', true]],
  );
  for (const c of servedChecks.filter((x) => x.tool === 'imakeep')) {
    assert.match(c.output, /^sha1: match \(native\)$/m);
    assert.match(c.output, /^sha256: match \(native\)$/m);
  }
});

test('imakeep verify accepts the exported bundle with the AK recreated from the guest\'s TPM on the host', (t) => {
  const r = done();
  const { results, bundleCheck } = collected();
  t.diagnostic(`export: ${results.exportLine}; bundle ${readFileSync(results.bundle).length} B`);
  for (const line of bundleCheck.output.split('\n')) t.diagnostic(line);
  assert.equal(bundleCheck.ok, true, bundleCheck.output);
  assert.match(results.exportLine, / caught-up$/);
  const second = results.runs.afterWorkload;
  assert.deepEqual(bundleCheck.verified, { bundles: 1, records: second.stored, checkpoints: 2, akTrusted: true });
  assert.ok(r.hostAkPem !== null);
});

test('the guest enrolled through /dev/tpmrm0: request and answer in the guest, challenge and finish on the host', (t) => {
  const r = done();
  const { host, tpm, bundleCheck } = enrolled();
  for (const name of ENROLL_STEP_NAMES) {
    const step = r.guest.nodeSteps.find((s) => s.name === name);
    assert.ok(step !== undefined, name);
    assert.equal(step.status, 0, `${name}: ${step.stderr}`);
    t.diagnostic(`guest ${name}: ${step.stdout.trim()}`);
  }
  t.diagnostic(`host challenge (${host.challengeSeconds.toFixed(2)} s): ${host.challengeOutput}`);
  // Guest uptime from the step before the request to the answer's end: the whole exchange,
  // the host's challenge included; then the host's finish.
  const uptime = (name: string): number => r.stages.find((s) => s.name === name)?.guestUptimeSeconds ?? NaN;
  const guestSeconds = uptime('node-enroll-answer') - uptime('node-replay');
  t.diagnostic(`full enrollment: ${(guestSeconds + host.finishSeconds).toFixed(1)} s (guest request, host challenge, guest answer: ${guestSeconds.toFixed(1)} s guest uptime under TCG; host finish ${host.finishSeconds.toFixed(2)} s)`);
  assert.ok(guestSeconds > 0);

  const record = decodeEnrollmentRecord(readFileSync(host.record, 'utf8'));
  const bundle = decodeBundle(readFileSync(collected().results.bundle));
  assert.equal(record.deviceId, GUEST_DEVICE_ID);
  assert.equal(bundle.deviceId, GUEST_DEVICE_ID);
  // The enrolled AK is the one that signs the guest's quotes: the bundle's AK, every checkpoint's
  // AK name, and the AK the host recreates from the stopped TPM. (Hex: decoded CBOR gives Buffers.)
  const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
  assert.ok(bundle.akPublic !== null);
  assert.equal(hex(record.akPublic), hex(bundle.akPublic));
  assert.equal(hex(record.akName), hex(tpmName(parseTpm2bPublic(bundle.akPublic))));
  const checkpoints = bundle.segments.flatMap((s) => s.checkpoints.map((c) => decodeCheckpoint(c, 'checkpoint')));
  assert.deepEqual(checkpoints.map((c) => hex(c.akName)), [hex(record.akName), hex(record.akName)]);
  assert.ok(r.hostAkPem !== null);
  assert.equal(trustedAkOfEnrollment(record).export({ type: 'spki', format: 'pem' }), readFileSync(r.hostAkPem, 'utf8'));
  // The EK is swtpm's: the certificate in its NV index and the EK tpm2_createek makes from the
  // TCG template, both read by tpm2-tools from the guest's TPM after the VM stopped.
  assert.equal(record.ekTemplate, 'L-1');
  assert.equal(hex(record.ekCertificate), hex(tpm.ekCertificate));
  assert.equal(hex(record.ekPublic), hex(tpm.ekPublic));
  // The same boot: the request's kernel boot id is the one the collector's boot record holds.
  assert.equal(record.kernelBootId, bundle.segments[0]?.info.kernelBootId);

  for (const line of bundleCheck.output.split('\n')) t.diagnostic(line);
  assert.equal(bundleCheck.ok, true, bundleCheck.output);
  assert.match(bundleCheck.output, /AK trusted \(pinned by --enrollment\)/);
  assert.deepEqual(bundleCheck.verified, { bundles: 1, records: collected().results.runs.afterWorkload.stored, checkpoints: 2, akTrusted: true });
});
