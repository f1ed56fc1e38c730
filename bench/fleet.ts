/**
 * Fleet bench (issue 15): many simulated devices pushing their evidence concurrently to
 * `imakeep fleet` processes, against verifying the same bundles alone on one core.
 *
 * Devices: each has a software AK (the TPM stand-in of hw/soft-tpm.ts: real
 * TPMS_ATTEST structures, ECDSA P-256, the AK's TPM2B_PUBLIC built like a TPM's), a real LevelDB
 * store filled as the collector fills it (chunks of 50 records, one version-2 checkpoint per
 * bundle, nonces chained), and its bundles built by `buildBundle` as the device API serves them.
 * Every device is enrolled with its AK (`FleetService.enroll`, as `imakeep fleet approve` does).
 *
 * Scenarios, one after the other in one run:
 *   - postgres x2: two `imakeep fleet --database` processes on one private PostgreSQL server
 *     (Debian's, hw/postgres.ts); device i pushes to process i mod 2;
 *   - pglite x1: one `imakeep fleet --data` process on its embedded PGlite.
 * Every device pushes its bundles one after the other (the next after the previous one's
 * acknowledgement, as `FleetSync` does), all devices at once; a push the fleet was too busy to
 * read in time (408) or answered 5xx is sent again after a pause, as a device would. Measured: bundles/s and records/s
 * over the wall time of the whole push, acknowledgement latency (first send to acknowledgement)
 * p50/p99, each fleet process's peak RSS (VmHWM) and CPU (utime + stime, /proc), the PostgreSQL
 * server's CPU (all its processes), and the fleet's CPU per record against the baseline.
 *
 * Baseline: `EvidenceVerifier.verify` (what `imakeep verify BUNDLE --ak` runs for each bundle
 * file, without its process start) over the same bundles, device by device, in this process on
 * one core: CPU per record. The fleet does that plus HTTP, policy-less verdicts, the EAR token and
 * the SQL of each push.
 *
 *   node dist/bench/fleet.js [--devices N] [--bundles N] [--records N]    (default 1000 2 250)
 *
 * Writes bench/results/fleet.md (and prints it).
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { FleetService, openPglite, openPostgres, openRepository, type SqlDatabase } from '../src/fleet/index.js';
import { PcrReplay } from '../src/ima/index.js';
import { buildBundle, formatCursor } from '../src/serve/index.js';
import { ChunkBuilder, nextCheckpointNonce, openStore, type EvidenceCursor, type QuoteLink } from '../src/store/index.js';
import { publicKeyFromTpm2b } from '../src/tpm/index.js';
import { EvidenceVerifier } from '../src/verify/index.js';
import { SoftQuoteSource } from '../hw/soft-tpm.js';
import { spawnFleet, type FleetProcess } from '../hw/fleet-process.js';
import { startPostgres } from '../hw/postgres.js';
import { CLOCK_TICKS_PER_SECOND, parseProcStatTicks, quantile, sampleProcess } from '../hw/proc.js';
import { describeMachine, machineLine } from './_machine.js';
import { ImaWorkload } from '../src/testing/index.js';

const RESULTS = fileURLToPath(new URL('../../bench/results/fleet.md', import.meta.url));
const CHUNK_RECORDS = 50;
const QUOTED = [
  { bank: 'sha1', pcr: 10 },
  { bank: 'sha256', pcr: 10 },
] as const;

/** A simulated device: its id, AK and bundles in push order. */
interface Device {
  readonly id: string;
  readonly akPublic: Uint8Array;
  readonly bundles: readonly Uint8Array[];
}

/** Fills a store as the collector does and cuts one bundle per checkpoint. */
async function makeDevice(n: number, bundles: number, records: number, dir: string): Promise<Device> {
  const id = `dev-${String(n).padStart(5, '0')}`;
  const tpm = new SoftQuoteSource();
  const akPublic = (await tpm.quote(new Uint8Array(32), [QUOTED[1]])).akPublic;
  const store = await openStore(dir);
  try {
    await store.updateMeta({ akPublic, deviceId: id });
    const boot = await store.beginBoot({
      kernelBootId: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
      firstSeen: 1_764_900_000_000,
      resetCount: 1, // the stand-in's clockInfo
      bankModes: { sha1: 'native', sha256: 'native' },
      endianness: 'le',
      template: 'ima-ng',
      templateHash: 'sha256',
    });
    const workload = new ImaWorkload({ seed: n, template: 'ima-ng', violationRate: 0.01 });
    const replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' }, verifyDigests: false });
    const out: Uint8Array[] = [];
    let previous: QuoteLink | undefined;
    let cursor: EvidenceCursor | undefined;
    let stored = 0;
    for (let b = 0; b < bundles; b++) {
      for (let left = records; left > 0; ) {
        const batch = [...workload.records(Math.min(CHUNK_RECORDS, left))];
        const builder = new ChunkBuilder(stored);
        for (const record of batch) {
          builder.add(record, 0);
          replay.extend(record);
        }
        tpm.extend(batch);
        const draft = builder.draft(replay.toState());
        await store.appendChunk(boot, draft);
        stored += draft.count;
        left -= draft.count;
      }
      const { nonce, anchor } = await nextCheckpointNonce(store, boot, previous);
      const quote = await tpm.quoteAndRead(nonce, QUOTED);
      await store.storeCheckpoint(boot, { count: stored, pcrs: quote.pcrs, attest: quote.attest, signature: quote.signature, akName: quote.akName, nonce, pcrBlob: null, anchor });
      previous = { attest: quote.attest, signature: quote.signature };
      const built = await buildBundle(store, cursor, { maxBytes: 64 * 1024 * 1024 });
      out.push(built.bytes);
      cursor = built.bundle.next;
    }
    if (cursor === undefined || formatCursor(cursor) !== `0.${stored}.${stored + 1}`) throw new Error(`device ${id}: bundles end at ${cursor === undefined ? '-' : formatCursor(cursor)}`);
    return { id, akPublic, bundles: out };
  } finally {
    await store.close();
  }
}

/** CPU seconds of this process (user + system). */
function ownCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** The baseline: every bundle verified device by device on this process's one thread. */
function verifyAlone(devices: readonly Device[]): { records: number; cpuSeconds: number; wallSeconds: number } {
  const cpu0 = ownCpu();
  const t0 = performance.now();
  let records = 0;
  for (const d of devices) {
    const verifier = new EvidenceVerifier({ trustedAk: publicKeyFromTpm2b(d.akPublic) });
    for (const bytes of d.bundles) {
      const report = verifier.verify(bytes);
      for (const s of report.segments) records += s.to - s.from;
    }
  }
  return { records, cpuSeconds: ownCpu() - cpu0, wallSeconds: (performance.now() - t0) / 1000 };
}

async function enrollAll(db: SqlDatabase, devices: readonly Device[]): Promise<void> {
  const service = await FleetService.open(await openRepository(db));
  try {
    for (const d of devices) await service.enroll(d.id, { enrollment: 'approved', akPublic: d.akPublic });
  } finally {
    await service.repository.close();
  }
}

/** CPU seconds of `pid` and every process whose parent it is (a PostgreSQL server and its backends). */
function treeCpuSeconds(pid: number): number {
  let ticks = 0;
  for (const entry of readdirProc()) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (entry === pid || ppid === pid) ticks += parseProcStatTicks(stat);
    } catch {
      // gone meanwhile
    }
  }
  return ticks / CLOCK_TICKS_PER_SECOND;
}

/** Pids of every process (proc(5)). */
function readdirProc(): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number);
}

/** What one scenario measured. */
interface ScenarioResult {
  readonly name: string;
  readonly processes: number;
  readonly bundles: number;
  readonly records: number;
  /** Pushes answered 408 or 5xx (or not at all) and sent again. */
  readonly retries: number;
  readonly wallSeconds: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly fleetCpuSeconds: number;
  readonly fleetPeakRssMiB: readonly number[];
  readonly serverCpuSeconds: number | null;
}

/** All devices push at once, each its bundles in order; every answer must be a 200 with the records. */
/** One push: `ok`, `retry` (408, 5xx, no answer), or the refusal's code. */
async function pushOnce(url: string, id: string, bytes: Uint8Array): Promise<string> {
  let res: Response;
  try {
    res = await fetch(`${url}/v1/devices/${id}/evidence`, { method: 'POST', body: bytes, headers: { 'content-type': 'application/cbor' } });
  } catch {
    return 'retry';
  }
  const body = (await res.json().catch(() => ({}))) as { error?: { code: string } };
  if (res.status === 200) return 'ok';
  if (res.status === 408 || res.status >= 500) return 'retry';
  return body.error?.code ?? `status ${res.status}`;
}

async function pushAll(name: string, fleets: readonly FleetProcess[], devices: readonly Device[], recordsPerBundle: number, serverCpu: () => number | null): Promise<ScenarioResult> {
  const cpu = (): number => fleets.reduce((sum, f) => sum + (sampleProcess(f.child.pid ?? 0)?.cpuSeconds ?? 0), 0);
  const cpu0 = cpu();
  const server0 = serverCpu();
  const latencies: number[] = [];
  let bundles = 0;
  let records = 0;
  let retries = 0;
  const t0 = performance.now();
  await Promise.all(
    devices.map(async (d, i) => {
      const url = fleets[i % fleets.length]?.url ?? '';
      for (const bytes of d.bundles) {
        const sent = performance.now();
        for (let attempt = 0; ; attempt++) {
          const answer = await pushOnce(url, d.id, bytes);
          // As a device's sync does: a fleet too busy to read the request in time (408), down or
          // failing (5xx, no answer) is retried after a jittered pause; a repeat of a bundle whose
          // answer was lost is acknowledged by FLEET_REPLAYED.
          if (answer === 'ok' || answer === 'FLEET_REPLAYED') break;
          if (answer !== 'retry' || attempt >= 20) throw new Error(`${d.id}: ${answer}`);
          retries++;
          await new Promise((r) => setTimeout(r, 500 + Math.random() * 1000));
        }
        latencies.push(performance.now() - sent);
        bundles++;
        records += recordsPerBundle;
      }
    }),
  );
  const wallSeconds = (performance.now() - t0) / 1000;
  const server1 = serverCpu();
  return {
    name,
    processes: fleets.length,
    bundles,
    records,
    retries,
    wallSeconds,
    p50Ms: quantile(latencies, 0.5),
    p99Ms: quantile(latencies, 0.99),
    fleetCpuSeconds: cpu() - cpu0,
    fleetPeakRssMiB: fleets.map((f) => Math.round((sampleProcess(f.child.pid ?? 0)?.peakRssKiB ?? Number.NaN) / 1024)),
    serverCpuSeconds: server0 === null || server1 === null ? null : server1 - server0,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { devices: { type: 'string' }, bundles: { type: 'string' }, records: { type: 'string' } } });
  const deviceCount = Number(values.devices ?? 1000);
  const bundleCount = Number(values.bundles ?? 2);
  const recordCount = Number(values.records ?? 250);
  const command = `node dist/bench/fleet.js --devices ${deviceCount} --bundles ${bundleCount} --records ${recordCount}`;
  const work = mkdtempSync(join(tmpdir(), 'imakeep-bench-fleet-'));
  const loadBefore = loadavg();
  const started = new Date();
  try {
    process.stderr.write(`making ${deviceCount} devices...\n`);
    const devices: Device[] = [];
    // The devices' stores on tmpfs: they are scaffolding, not measured, and a synced put per chunk
    // on a shared disk would make building them the longest part of the run.
    const shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'imakeep-bench-devices-'));
    for (let i = 0; i < deviceCount; i++) {
      const dir = join(shm, 'device');
      devices.push(await makeDevice(i, bundleCount, recordCount, dir));
      rmSync(dir, { recursive: true, force: true });
    }
    rmSync(shm, { recursive: true, force: true });
    process.stderr.write('verifying alone...\n');
    const alone = verifyAlone(devices);

    process.stderr.write('postgres x2...\n');
    const server = await startPostgres();
    let onServer: ScenarioResult;
    try {
      await enrollAll(openPostgres(server.url, 1), devices);
      const fleets = [await spawnFleet(join(work, 'pg-a'), server.url), await spawnFleet(join(work, 'pg-b'), server.url)];
      try {
        const postmaster = Number(readFileSync(join(server.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
        onServer = await pushAll('postgres server, 2 fleet processes', fleets, devices, recordCount, () => treeCpuSeconds(postmaster));
      } finally {
        for (const f of fleets) await f.kill();
      }
    } finally {
      await server.stop();
    }

    process.stderr.write('pglite x1...\n');
    const data = join(work, 'pglite-fleet');
    await enrollAll(await openPglite(join(data, 'pglite')), devices);
    const fleet = await spawnFleet(data);
    let embedded: ScenarioResult;
    try {
      embedded = await pushAll('PGlite, 1 fleet process', [fleet], devices, recordCount, () => null);
    } finally {
      await fleet.kill();
    }

    const perRecordUs = (cpu: number, records: number): number => (cpu / records) * 1e6;
    const aloneUs = perRecordUs(alone.cpuSeconds, alone.records);
    const row = (r: ScenarioResult): string => {
      const fleetUs = perRecordUs(r.fleetCpuSeconds, r.records);
      const serverUs = r.serverCpuSeconds === null ? null : perRecordUs(r.serverCpuSeconds, r.records);
      return `| ${r.name} | ${r.bundles.toLocaleString('en')} (${r.retries} retried) | ${r.records.toLocaleString('en')} | ${r.wallSeconds.toFixed(1)} | ${(r.bundles / r.wallSeconds).toFixed(0)} | ${Math.round(r.records / r.wallSeconds).toLocaleString('en')} | ${r.p50Ms.toFixed(0)} | ${r.p99Ms.toFixed(0)} | ${r.fleetPeakRssMiB.join(' + ')} | ${fleetUs.toFixed(1)} | ${serverUs === null ? '–' : serverUs.toFixed(1)} | ${(fleetUs / aloneUs).toFixed(2)}x${serverUs === null ? '' : ` (${((fleetUs + serverUs) / aloneUs).toFixed(2)}x with the server)`} |`;
    };
    const loadAfter = loadavg();
    const machine = describeMachine([]);
    const md = `# Fleet bench

\`${command}\` — ${started.toISOString()}, ${machineLine(machine)}; load average ${loadBefore.map((l) => l.toFixed(1)).join(' ')} before, ${loadAfter.map((l) => l.toFixed(1)).join(' ')} after (a machine shared with other jobs: wall-time figures are lower bounds of what the code does alone; CPU per record is the steadier figure).

${deviceCount.toLocaleString('en')} simulated devices (software AKs, each enrolled), each pushing ${bundleCount} bundles of ${recordCount} records (one checkpoint per bundle) one after the other, all devices at once.

| scenario | bundles | records | wall s | bundles/s | records verified/s | ack p50 ms | ack p99 ms | fleet peak RSS MiB | fleet CPU µs/record | PostgreSQL CPU µs/record | fleet CPU vs verify alone |
|---|---|---|---|---|---|---|---|---|---|---|---|
${row(onServer)}
${row(embedded)}

Verify alone (\`EvidenceVerifier.verify\`, what \`imakeep verify BUNDLE --ak\` runs per bundle, one core, the same ${alone.records.toLocaleString('en')} records): ${aloneUs.toFixed(1)} µs CPU/record (${Math.round(alone.records / alone.cpuSeconds).toLocaleString('en')} records per CPU-second).
`;
    writeFileSync(RESULTS, md);
    process.stdout.write(md);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
