/**
 * `npm run demo`: imakeep's main job end to end, on an emulated Linux 7.2 kernel, in about a minute.
 *
 * 1. A private swtpm with EK certificates from swtpm's local CA and the securityfs emulator (FUSE;
 *    `ima_flush_htable` on) start; the device is enrolled (`imakeep enroll request|challenge|answer|
 *    finish`: EK certificate chain, AK attributes, credential activation); a workload
 *    runs like a device's day: a boot burst of 5,000 measurements, a steady trickle, a burst.
 *    Every record is logged, then extended into PCR 10 of the swtpm, as the kernel does.
 * 2. The collector (`imakeep run --fleet URL`, with removal) drains, stores, quotes and removes
 *    meanwhile, and serves the API on a unix socket. Its fleet is down all that time: the device
 *    collects offline and backs off.
 * 2b. The fleet (`imakeep fleet`, PGlite, swtpm's local CA as `--ca`) runs from the start, but the
 *    device's link to it is down until the workload is over; then the device enrolls itself on first contact (EK certificate, credential activation), pushes
 *    its backlog from the start, answers the fleet's freshness challenge; the demo prints what the
 *    fleet acknowledged (its EAR token, checked with the fleet's key) and what the device deleted.
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
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
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
import type { DeviceView } from '../src/fleet/index.js';
import { fleetKeyFromPem, verifyEarToken } from '../src/verify/index.js';
import type { FleetSyncStatus } from '../src/daemon/index.js';
import { connect, createServer, type Server } from 'node:net';
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
/** After the workload: how long to let the collector catch up, and the fleet sync, before checking. */
const SETTLE_MS = 30_000;
/** The device's id at the fleet. */
const DEVICE_ID = 'demo-device';
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

/**
 * The device's network link to the fleet: a loopback port that refuses connections while the link
 * is down and, once `up`, forwards each connection to the fleet. The fleet starts at once (PGlite
 * takes a few seconds) while the device collects, cut off from it.
 */
class Link {
  readonly #server: Server = createServer((c) => {
    const fleetSide = connect(this.#target, '127.0.0.1');
    c.pipe(fleetSide).pipe(c);
    c.on('error', () => fleetSide.destroy());
    fleetSide.on('error', () => c.destroy());
  });
  #target = 0;

  private constructor(readonly port: number) {}

  /** A link on a free port, down. */
  static async down(): Promise<Link> {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const address = probe.address();
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    return new Link(typeof address === 'object' && address !== null ? address.port : 0);
  }

  /** Up: connections to `port` reach the fleet at `target`. */
  up(target: number): Promise<void> {
    this.#target = target;
    return new Promise((resolve) => this.#server.listen(this.port, '127.0.0.1', resolve));
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.#server.listening) return resolve();
      this.#server.close(() => resolve());
      this.#server.unref();
    });
  }
}

/** `imakeep fleet` in its own process (PGlite's start is seconds of CPU: not in the process serving the TPM proxy). */
interface FleetProcess {
  readonly url: string;
  readonly child: ChildProcess;
}

/** Starts `imakeep fleet --data DIR --listen 127.0.0.1:0 --ca CA`; resolves with its address once it listens. */
function startFleetProcess(data: string, ca: string): Promise<FleetProcess> {
  const child = spawn(process.execPath, [CLI, 'fleet', '--data', data, '--listen', '127.0.0.1:0', '--ca', ca], { stdio: ['ignore', 'pipe', 'pipe'] });
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString('utf8')));
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString('utf8');
      const url = /^imakeep fleet: (http:\S+)$/m.exec(out)?.[1];
      if (url !== undefined) resolve({ url, child });
    });
    child.once('exit', (code) => reject(new Error(`imakeep fleet exited (${code}): ${err.trim().split('\n').pop() ?? ''}`)));
  });
}

/** SIGTERM, then waits for the fleet to close its database. */
function stopFleetProcess(fleet: FleetProcess): Promise<void> {
  return new Promise((resolve) => {
    if (fleet.child.exitCode !== null || fleet.child.signalCode !== null) return resolve();
    fleet.child.once('exit', () => resolve());
    fleet.child.kill('SIGTERM');
  });
}

/** What the fleet holds of the device: its view (an operator route, open on loopback) and the last acknowledgement (with the device's token). */
interface FleetSide {
  readonly view: DeviceView | undefined;
  readonly token: string | undefined;
}

async function fleetSide(url: string, credentials: string): Promise<FleetSide> {
  try {
    const view = await fetch(`${url}/v1/devices/${DEVICE_ID}`);
    if (view.status !== 200) return { view: undefined, token: undefined };
    const device = JSON.parse(readFileSync(credentials, 'utf8')) as { token?: string };
    const ack = await fetch(`${url}/v1/devices/${DEVICE_ID}/ack`, { headers: { authorization: `Bearer ${device.token ?? ''}` } });
    return { view: (await view.json()) as DeviceView, token: ack.status === 200 ? ((await ack.json()) as { token: string }).token : undefined };
  } catch {
    return { view: undefined, token: undefined };
  }
}

/** The fleet's side after the sync: enrolled by itself, everything the device checkpointed verified and acknowledged. */
async function fleetCheck(side: FleetSide, url: string, checkpointed: number | undefined): Promise<Check> {
  const name = 'fleet: the device enrolled itself and the fleet verified and acknowledged its whole log after the offline period';
  const { view, token } = side;
  if (view === undefined || token === undefined) return { name, ok: false, detail: view === undefined ? 'the device never enrolled' : 'nothing acknowledged' };
  const ear = verifyEarToken(token, fleetKeyFromPem(await (await fetch(`${url}/v1/key`)).text()));
  const ok = view.enrollment === 'approved' && view.verdict === 'pass' && ear.recordsVerified === checkpointed && view.verifiedUpTo?.records === checkpointed;
  return { name, ok, detail: `${view.enrollment}; EAR token ${ear.status}, ${n(ear.recordsVerified)} records verified up to ${ear.verified.cursor} (device checkpointed ${checkpointed === undefined ? '—' : n(checkpointed)})` };
}

function isStatus(x: unknown): x is { collector: CollectorStatus & { fleet?: FleetSyncStatus } } {
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
  let fleetStarting: Promise<FleetProcess> | undefined;
  let link: Link | undefined;
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
    // The fleet starts now, the device's link to it stays down until the workload is over.
    fleetStarting = startFleetProcess(join(workDir, 'fleet'), join(workDir, 'ca'));
    fleetStarting.catch(() => undefined); // awaited after the workload
    link = await Link.down();
    const fleetUrl = `http://127.0.0.1:${link.port}`;
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
        extraArgs: ['--fleet', fleetUrl, '--fleet-id', DEVICE_ID, '--fleet-interval', '2000', '--fleet-retry-max', '3000'],
      });
      say(`collector: imakeep run --fleet ${fleetUrl} (pid ${started.collector.pid}), API on ${socket}; its link to the fleet is down: the device collects offline`);
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
    let sync: FleetSyncStatus | undefined;
    let peakRssKiB = 0;
    const refresh = async () => {
      if (collector === undefined) return;
      const proc = sampleProcess(collector.pid);
      if (proc !== undefined) peakRssKiB = Math.max(peakRssKiB, proc.peakRssKiB);
      try {
        const s = await getJson(socket, '/v1/status', 2000);
        if (isStatus(s)) {
          status = s.collector;
          sync = s.collector.fleet;
        }
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
      await refresh();
      say(`offline so far: the device's sync failed ${sync?.failures ?? 0} times in a row (${sync?.lastError?.code ?? '—'}), backing off; enrollment: ${sync?.enrollment ?? '—'}`);
      const fleet = await fleetStarting;
      await link.up(Number(new URL(fleet.url).port));
      say(`link up: the device reaches the fleet (imakeep fleet at ${fleet.url}, PGlite, --ca swtpm's local CA)`);
      const credentials = join(workDir, 'store', 'fleet-credentials.json');
      const settleUntil = performance.now() + SETTLE_MS;
      let side: FleetSide = { view: undefined, token: undefined };
      while (!abort.signal.aborted && performance.now() < settleUntil) {
        await new Promise((r) => setTimeout(r, 1000));
        await refresh();
        side = await fleetSide(fleet.url, credentials);
        const checkpointed = status?.lastCheckpoint?.count;
        const collected = status !== undefined && status.stored >= total && emulator.stats().recordsCurrent + emulator.stats().recordsStaged < 1000;
        if (collected && checkpointed !== undefined && side.view?.verifiedUpTo?.records === checkpointed && sync?.freshAt !== null) break;
      }
      await progress('settled');
      const acked = side.view?.verifiedUpTo;
      say(
        `fleet acknowledged: ${acked === null || acked === undefined ? 'nothing' : `${n(acked.records)} records up to cursor ${acked.cursor}`} in ${n(side.view?.acknowledgements ?? 0)} signed acknowledgements; ` +
          `verdict ${side.view?.verdict ?? '—'}; fresh quote ${side.view?.freshness === null || side.view?.freshness === undefined ? 'none' : `${side.view.freshness.ageSeconds} s old`}`,
      );
      say(
        `device deleted: ${n(emulator.stats().recordsDeleted)} records from the kernel (stored first); ${n(sync?.bootsDropped ?? 0)} boots from its store ` +
          '(retention drops a boot once it has ended and the fleet holds it whole: this boot is still running, so the store keeps it)',
      );
      const deviceSide = collector.output().split('\n').filter((l) => l.startsWith('fleet: ')).slice(-2);
      for (const line of deviceSide) say(`device: ${line}`);
      checks.push(await fleetCheck(side, fleet.url, status?.lastCheckpoint?.count));
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
      `  fleet                     ${sync === undefined ? 'not reached' : `${sync.enrollment} as ${sync.deviceId}, ${n(sync.recordsAcknowledged)} records acknowledged in ${n(sync.bundlesAcknowledged)} bundles after ${sync.lastError === null ? 'no' : 'an'} offline period`}`,
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
    await link?.close();
    const fleet = await fleetStarting?.catch(() => undefined);
    if (fleet !== undefined) await stopFleetProcess(fleet);
    await stopDeviceParts(started, (part, err) => process.stderr.write(`demo: stopping ${part} failed: ${String(err)}\n`));
    say('stopped everything it started (collector, fleet, emulator mount, swtpm); temp dir removed');
  }
}

/** Bytes used by a directory tree (`du -sb`); NaN when du fails. */
function duBytes(dir: string): number {
  const r = spawnSync('du', ['-sb', dir], { encoding: 'utf8' });
  return r.status === 0 ? Number(r.stdout.split('\t')[0]) : Number.NaN;
}

process.exitCode = await main();
