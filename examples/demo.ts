/**
 * `npm run demo`: imakeep's main job end to end, on an emulated Linux 7.2 kernel, in about a minute.
 *
 * 1. A private swtpm with EK certificates from swtpm's local CA and the securityfs emulator (FUSE;
 *    `ima_flush_htable` on) start; the device is enrolled (`imakeep enroll request|challenge|answer|
 *    finish`: EK certificate chain, AK attributes, credential activation); a workload
 *    runs like a device's day: a boot burst of 5,000 measurements, a steady trickle, a burst.
 *    Every record is logged, then extended into PCR 10 of the swtpm, as the kernel does.
 * 2. The collector (`imakeep run`, with removal) drains, stores, quotes and removes meanwhile,
 *    and serves the API on a unix socket.
 * 3. The served log is checked three ways: byte for byte against every record the emulated kernel
 *    ever logged; with `evmctl ima_measurement` against the swtpm's PCRs; and with
 *    `imakeep verify --enrollment` on the evidence bundles (the enrolled AK, quote signatures,
 *    nonce chain, replay).
 * 4. A summary; then every process and mount it started is stopped (also on error and Ctrl-C).
 *
 *   npm run demo                      (as root: FUSE mounts; IMAKEEP_DEMO_SECONDS=40 by default)
 *
 * Exit status 0 only when every verification passed.
 */
import { execFile, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { startSecurityfsEmulator } from '../hw/securityfs/emulator.js';
import { tpmBootAggregate } from '../hw/securityfs/sources.js';
import { startSwtpm, SWTPM_LOCAL_CA } from '../hw/swtpm.js';
import type { CollectorStatus } from '../src/collector/index.js';
import { toHex, type BankName, type ImaRecord } from '../src/ima/index.js';
import { X86_64_KMEM, recordKmem } from '../src/kernel/index.js';
import { Tpm } from '../src/tpm/index.js';
import { CLI, DEVICE_NODE_FLAGS, REPO_ROOT, emulatedCmdline, startCollector, verbAvailability } from '../hw/collector-process.js';
import { stopDeviceParts, type DeviceParts } from '../hw/device-parts.js';
import { sampleProcess } from '../hw/proc.js';
import { startTpmProxy } from '../hw/tpm-proxy.js';
import { getJson, getToFile } from '../hw/unix-http.js';
import { demoWorkload, driveWorkload, recordSupply } from '../hw/workload.js';

const SECONDS = Number(process.env.IMAKEEP_DEMO_SECONDS ?? 40);
/** The demo's progress lines, this often. */
const PROGRESS_MS = 3000;
/** The collector's cycle period: 5 s instead of the daemon's 60 s, so a short demo shows several. */
const CYCLE_MS = 5000;
/** After the workload: how long to let the collector catch up before checking. */
const SETTLE_MS = 20_000;
const BANKS: readonly BankName[] = ['sha1', 'sha256'];

const t0 = performance.now();
const elapsed = () => ((performance.now() - t0) / 1000).toFixed(1).padStart(5);
const say = (line: string) => process.stdout.write(`[${elapsed()} s] ${line}\n`);
const n = (x: number) => x.toLocaleString('en-US');
const kib = (bytes: number) => `${n(Math.round(bytes / 1024))} KiB`;

/** One verification's outcome. */
interface Check {
  readonly name: string;
  readonly ok: boolean | 'not yet';
  readonly detail: string;
}


/** Preconditions a fresh machine may lack after `scripts/ensure.mjs demo`: root and /dev/fuse. */
function preflight(): string | undefined {
  if (process.getuid?.() !== 0) return 'run as root: the emulator mounts a FUSE file system with allow_other';
  if (!existsSync('/dev/fuse')) return '/dev/fuse is missing (modprobe fuse, or a container with --device /dev/fuse)';
  return undefined;
}

/** PCRs 0-10 of `bank` as `PCR-NN: hex` lines: the file `evmctl ima_measurement --pcrs` reads (0-9 check boot_aggregate). */
async function evmctlPcrFile(tpm: Tpm, bank: BankName, file: string): Promise<string> {
  const values = await tpm.pcrRead(Array.from({ length: 11 }, (_, pcr) => ({ bank, pcr })));
  writeFileSync(file, `${values.map((v) => `PCR-${String(v.pcr).padStart(2, '0')}: ${toHex(v.value)}`).join('\n')}\n`);
  return file;
}

function evmctlCheck(what: string, logFile: string, pcrFiles: readonly [BankName, string][]): Check {
  const args = ['ima_measurement', '--ignore-violations', ...pcrFiles.flatMap(([bank, f]) => ['--pcrs', `${bank},${f}`]), logFile];
  const r = spawnSync('evmctl', args, { encoding: 'utf8' });
  const out = `${r.stdout}${r.stderr}`.trim().split('\n').slice(-2).join(' / ');
  return { name: `evmctl ima_measurement (${what} vs the swtpm's PCRs, sha1 + sha256)`, ok: r.status === 0, detail: r.status === 0 ? 'PCRs match' : `exit ${r.status}: ${out}` };
}

function bytesCheck(name: string, served: string, oracle: string): Check {
  const a = readFileSync(served);
  const b = readFileSync(oracle);
  if (a.equals(b)) return { name, ok: true, detail: `${n(a.length)} bytes, identical` };
  let at = 0;
  while (at < Math.min(a.length, b.length) && a[at] === b[at]) at++;
  return { name, ok: false, detail: `served ${n(a.length)} bytes, kernel ${n(b.length)}; first difference at byte ${n(at)}` };
}

/**
 * Runs one `imakeep` verb; throws with its last line unless it exits 0. Asynchronous: the TPM
 * proxy the verb talks to runs in this process, so a blocking spawn would starve it.
 */
function imakeep(args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err === null) return resolve();
      reject(new Error(`imakeep ${args.slice(0, 2).join(' ')}: ${`${stdout}${stderr}`.trim().split('\n').pop() ?? String(err)}`));
    });
  });
}

/**
 * Enrollment, as a verifier meets a device it never saw: the device's request (EK public and
 * certificate, AK), the verifier's challenge (the EK certificate chained to swtpm's local CA, the AK's
 * attributes checked, a credential only this TPM's EK can open), the device's answer
 * (ActivateCredential), the verifier's record of the AK it proved. Returns the record's path.
 */
async function enroll(tpm: string, dir: string): Promise<string> {
  const ca = join(dir, 'ca');
  mkdirSync(ca, { recursive: true });
  for (const f of SWTPM_LOCAL_CA.certificates) copyFileSync(f, join(ca, basename(f)));
  const f = (name: string) => join(dir, name);
  await imakeep(['enroll', 'request', '--tpm', tpm, '--out', f('enroll-request.json')]);
  await imakeep(['enroll', 'challenge', f('enroll-request.json'), '--ca', ca, '--out', f('enroll-challenge.json'), '--state', f('enroll-state')]);
  await imakeep(['enroll', 'answer', f('enroll-challenge.json'), '--tpm', tpm, '--out', f('enroll-answer.json')]);
  await imakeep(['enroll', 'finish', f('enroll-answer.json'), '--out', f('enrollment.json'), '--state', f('enroll-state')]);
  return f('enrollment.json');
}

/** `imakeep verify` on every evidence bundle of the store, fetched from the API page by page, with the AK the enrollment proved. */
async function verifyEvidence(socket: string, dir: string, enrollment: string): Promise<Check> {
  const name = 'imakeep verify --enrollment (evidence bundles: the enrolled AK, quotes, nonce chain, replay)';
  const verify = verbAvailability('verify');
  if (!verify.available) return { name, ok: 'not yet', detail: verify.reason };
  const files: string[] = [];
  let since: string | undefined;
  for (let page = 0; page < 1000; page++) {
    const file = join(dir, `evidence-${page}.cbor`);
    const res = await getToFile(socket, `/v1/evidence${since === undefined ? '' : `?since=${encodeURIComponent(since)}`}`, file);
    files.push(file);
    // A bundle cut at the size limit says so; the next one starts at its end cursor (src/serve/http.ts).
    const next = res.headers['x-imakeep-next-cursor'];
    if (res.headers['x-imakeep-bundle-full'] !== '1' || typeof next !== 'string' || next === since) break;
    since = next;
  }
  const r = spawnSync(process.execPath, [CLI, 'verify', ...files, '--enrollment', enrollment], { encoding: 'utf8' });
  const last = `${r.stdout}${r.stderr}`.trim().split('\n').pop() ?? '';
  return { name, ok: r.status === 0, detail: `${files.length} bundle(s): ${last}` };
}

function isStatus(x: unknown): x is { collector: CollectorStatus } {
  return typeof x === 'object' && x !== null && 'collector' in x && typeof x.collector === 'object' && x.collector !== null;
}

async function main(): Promise<number> {
  const abort = new AbortController();
  const onSignal = () => {
    say('interrupted: cleaning up');
    abort.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const started: DeviceParts = {};
  const checks: Check[] = [];
  try {
    say(`imakeep demo: emulated Linux 7.2 kernel + swtpm, ${SECONDS} s workload (IMAKEEP_DEMO_SECONDS)`);
    const problem = preflight();
    if (problem !== undefined) {
      say(`cannot run: ${problem}`);
      return 1;
    }
    const workDir = mkdtempSync(join(tmpdir(), 'imakeep-demo-'));
    started.workDir = workDir;
    // EK certificates from swtpm's local CA, as a TPM maker's: the device can then be enrolled.
    started.swtpm = await startSwtpm({ banks: BANKS, ekCertificates: true });
    started.mux = await startTpmProxy(started.swtpm.host, started.swtpm.port);
    started.tpm = Tpm.open(started.mux.address);
    const tpm = started.tpm;
    started.emulator = await startSecurityfsEmulator({ tpm, banks: ['sha256'], flushHtable: true });
    const emulator = started.emulator;
    say(`swtpm ${started.swtpm.address} (banks ${BANKS.join(', ')}); securityfs emulator at ${emulator.securityfsRoot} (ima_flush_htable)`);
    say(`shared TPM: --tpm ${started.mux.address}; tpm2-tools -T ${started.mux.tcti}`);

    const enrollment = await enroll(started.mux.address, workDir);
    say(`enrolled: EK certificate chained to swtpm's local CA, AK proved by credential activation (${enrollment})`);

    const socket = join(workDir, 'imakeep.sock');
    const run = verbAvailability('run');
    if (run.available) {
      started.collector = await startCollector({
        securityfsRoot: emulator.securityfsRoot,
        tpm: started.mux.address,
        storeDir: join(workDir, 'store'),
        flavour: 'auto',
        socket,
        intervalMs: CYCLE_MS,
        cmdlineFile: emulatedCmdline(workDir, true),
      });
      say(`collector: imakeep run (pid ${started.collector.pid}), API on ${socket}`);
    } else {
      say(`collector: NOT YET — ${run.reason}; the kernel list will only grow`);
    }
    const collector = started.collector;

    // Modeled kernel memory had nothing been removed: the hash table plus every record (docs/kernel.md#kernel-memory-per-record).
    let kmemWithout = X86_64_KMEM.hashTable;
    const slots = emulator.tpmBanks.length;
    const append = async (records: ImaRecord[]) => {
      await emulator.append(records);
      for (const r of records) {
        const k = recordKmem(r, slots);
        kmemWithout += k.data + k.entry;
      }
    };
    let status: CollectorStatus | undefined;
    let peakRssKiB = 0;
    const refresh = async () => {
      if (collector === undefined) return;
      const proc = sampleProcess(collector.pid);
      if (proc !== undefined) peakRssKiB = Math.max(peakRssKiB, proc.peakRssKiB);
      try {
        const s = await getJson(socket, '/v1/status', 2000);
        if (isStatus(s)) status = s.collector;
      } catch {
        // not listening yet, or busy: the next tick asks again
      }
    };
    const progress = async (phase: string) => {
      await refresh();
      const st = emulator.stats();
      const rss = collector === undefined ? undefined : sampleProcess(collector.pid)?.rssKiB;
      say(
        `${phase.padEnd(9)} measured ${n(st.recordsTotal).padStart(6)} | stored ${status === undefined ? '—' : n(status.stored).padStart(6)} | ` +
          `removed ${n(st.recordsDeleted).padStart(6)} | kernel list ${n(st.recordsCurrent + st.recordsStaged).padStart(6)} | ` +
          `kernel memory ${kib(st.kmemBytes)} (without imakeep ${kib(kmemWithout)})${rss === undefined ? '' : ` | collector RSS ${(rss / 1024).toFixed(0)} MiB`}`,
      );
    };

    const workload = demoWorkload(SECONDS);
    say(`workload: ${workload.description}`);
    const supply = recordSupply(workload.records, await tpmBootAggregate(tpm, 'sha256'));
    const ticker = setInterval(() => void progress('workload'), PROGRESS_MS);
    try {
      await driveWorkload(workload, supply, append, abort.signal);
    } finally {
      clearInterval(ticker);
    }
    if (abort.signal.aborted) return 130;
    await progress('workload');

    // The PCRs now cover every record: the workload has stopped and each append awaited its extends.
    const pcrFiles: [BankName, string][] = [];
    for (const bank of BANKS) pcrFiles.push([bank, await evmctlPcrFile(tpm, bank, join(workDir, `pcrs-${bank}.txt`))]);
    const total = emulator.stats().recordsTotal;

    if (collector !== undefined) {
      const settleUntil = performance.now() + SETTLE_MS;
      while (!abort.signal.aborted && performance.now() < settleUntil) {
        await new Promise((r) => setTimeout(r, 1000));
        await refresh();
        if (status !== undefined && status.stored >= total && emulator.stats().recordsCurrent + emulator.stats().recordsStaged < 1000) break;
      }
      await progress('settled');
      const logFile = join(workDir, 'served_binary_runtime_measurements');
      const asciiFile = join(workDir, 'served_ascii_runtime_measurements');
      await getToFile(socket, '/v1/log?format=binary', logFile);
      await getToFile(socket, '/v1/log?format=ascii', asciiFile);
      checks.push(bytesCheck('served binary log = every record the kernel logged (SHA-1 list)', logFile, emulator.control.oracleBinary));
      checks.push(bytesCheck('served ASCII log = the kernel ASCII list', asciiFile, emulator.control.oracleAscii));
      checks.push(evmctlCheck('served log', logFile, pcrFiles));
      checks.push(await verifyEvidence(socket, workDir, enrollment));
    } else {
      // Without a collector the only log is the kernel's own: check the emulated kernel is consistent.
      const logFile = join(workDir, 'kernel_binary_runtime_measurements');
      writeFileSync(logFile, readFileSync(join(emulator.imaDir, 'binary_runtime_measurements_sha1')));
      checks.push(evmctlCheck('kernel list', logFile, pcrFiles));
      checks.push({ name: 'collector: store, remove, serve, imakeep verify', ok: 'not yet', detail: run.available ? '' : run.reason });
    }

    const end = emulator.stats();
    const storeBytes = collector === undefined ? 0 : duBytes(join(workDir, 'store'));
    const rssNow = collector === undefined ? undefined : sampleProcess(collector.pid);
    if (rssNow !== undefined) peakRssKiB = Math.max(peakRssKiB, rssNow.peakRssKiB);
    const lines = [
      '',
      'imakeep demo — summary',
      `  records measured          ${n(end.recordsTotal)} (${workload.description})`,
      `  stored by imakeep         ${status === undefined ? 'not yet' : `${n(status.stored)} in ${n(status.metrics.chunksCommitted)} chunks, ${n(status.metrics.checkpoints)} checkpoints, ${kib(storeBytes)} on disk`}`,
      `  removed from the kernel   ${n(end.recordsDeleted)}${status === undefined ? '' : ` (flavour ${status.flavor}, ${n(status.metrics.removals)} removals, writer lock held p99 ${status.metrics.writerLockHoldMs.p99} ms)`}`,
      `  kernel list now           ${n(end.recordsCurrent + end.recordsStaged)} records`,
      `  kernel memory (modeled)   ${kib(end.kmemBytes)} with imakeep, ${kib(kmemWithout)} without (src/kernel/kmem.ts; measured on a real kernel: hw/qemu/CALIBRATION.md)`,
      `  collector RSS             ${rssNow === undefined ? 'not yet' : `${(rssNow.rssKiB / 1024).toFixed(1)} MiB now, ${(peakRssKiB / 1024).toFixed(1)} MiB peak (node ${process.version} ${DEVICE_NODE_FLAGS.join(' ')})`}`,
      '  checks',
      ...checks.map((c) => `    ${c.ok === true ? 'PASS' : c.ok === false ? 'FAIL' : 'NOT YET'}  ${c.name}: ${c.detail}`),
      '  look next',
      '    README.md "Performance" and bench/results/ (npm run bench): kernel memory over time per flavour',
      '    npm run sim (emulator + swtpm, live), then: imakeep run --securityfs /tmp/imakeep-sim --tpm <its swtpm address> --store /tmp/store',
      '    while it runs: imakeep status --store /tmp/store; imakeep log --store /tmp/store --format ascii; curl --unix-socket /tmp/store/imakeep.sock http://x/v1/status',
      `    ${join(REPO_ROOT, 'examples', 'README.md')}: gateway integration, offline sync, a Keylime-style verifier`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    const passed = checks.length > 0 && checks.every((c) => c.ok === true);
    say(passed ? 'all checks passed' : 'some checks did not pass (see above)');
    return passed ? 0 : 1;
  } catch (err) {
    process.stderr.write(`demo: ${err instanceof Error ? `${'code' in err ? `${String(err.code)}: ` : ''}${err.message}` : String(err)}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await stopDeviceParts(started, (part, err) => process.stderr.write(`demo: stopping ${part} failed: ${String(err)}\n`));
    say('stopped everything it started (collector, emulator mount, swtpm); temp dir removed');
  }
}

/** Bytes used by a directory tree (`du -sb`); NaN when du fails. */
function duBytes(dir: string): number {
  const r = spawnSync('du', ['-sb', dir], { encoding: 'utf8' });
  return r.status === 0 ? Number(r.stdout.split('\t')[0]) : Number.NaN;
}

process.exitCode = await main();
