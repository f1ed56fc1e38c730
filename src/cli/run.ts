/**
 * `imakeep run`: the collector daemon. Runs the cycle (drain, chunk, quote, match, remove) until
 * SIGINT/SIGTERM and serves the HTTP API on a unix socket in the store directory (LevelDB admits
 * one process: `imakeep log` and `imakeep status` reach the store through it while it runs).
 *
 *   imakeep run --securityfs DIR --tpm ADDR --store DIR [--flavor auto|n|staged|none]
 *               [--interval MS] [--socket PATH] [--banks sha1,sha256] [--cycle-at-records N]
 *               [--chunk-bytes N] [--boot-id-file PATH] [--cmdline-file PATH] [--once]
 *
 * One line per cycle on stdout. Test seam: see `parseCrashAt` (IMAKEEP_TEST_CRASH_AT).
 */
import { rmSync } from 'node:fs';
import {
  COLLECTOR_DEFAULTS,
  COLLECTOR_STEPS,
  Collector,
  RECOVERY_PAUSE_REASONS,
  daemonPaths,
  missingDaemonEnv,
  parseCrashAt,
  type CollectorHooks,
  type CollectorStatus,
  type FlavorChoice,
} from '../collector/index.js';
import { openStore } from '../store/index.js';
import { Tpm, TpmQuoter } from '../tpm/index.js';
import { startApiServer, type MetricSample } from '../serve/index.js';
import { banksOption, choiceOption, integerOption, interruptSignal, parseVerbArgs, requireOptions, type CliVerb } from './_verb.js';

/** Usage of `imakeep run`. */
export const usage = `usage: imakeep run --securityfs DIR --tpm ADDR --store DIR [--flavor auto|n|staged|none]
                   [--interval MS] [--socket PATH] [--banks sha1,sha256] [--cycle-at-records N]
                   [--chunk-bytes N] [--boot-id-file PATH] [--cmdline-file PATH] [--once]`;

const FLAVORS: readonly FlavorChoice[] = ['auto', 'n', 'staged', 'none'];

/** Prometheus samples of a collector status. */
export function statusSamples(s: CollectorStatus): MetricSample[] {
  const m = s.metrics;
  const g = (name: string, help: string, value: number, labels?: Record<string, string>): MetricSample => ({ name, help, type: 'gauge', value, labels });
  const c = (name: string, help: string, value: number, labels?: Record<string, string>): MetricSample => ({ name, help, type: 'counter', value, labels });
  return [
    c('imakeep_records_stored_total', 'Records committed to the store since start.', m.recordsStored),
    c('imakeep_records_removed_total', 'Records removed from the kernel since start.', m.recordsRemoved),
    c('imakeep_bytes_stored_total', 'Record bytes committed to the store since start.', m.bytesStored),
    c('imakeep_cycles_total', 'Collector cycles run.', m.cycles),
    c('imakeep_checkpoints_total', 'Checkpoints stored since start.', m.checkpoints),
    g('imakeep_kernel_records', 'Records the kernel holds (as of the last drain).', s.kernelRecords),
    g('imakeep_kernel_bytes_model', 'Modeled kernel memory of those records.', s.kernelBytesModel),
    g('imakeep_removed_records', 'T: records of the current boot removed from the kernel.', s.removed),
    g('imakeep_last_checkpoint_records', 'Records covered by the last checkpoint.', s.lastCheckpoint?.count ?? 0),
    ...(['p50', 'p99', 'max'] as const).map((q) => g('imakeep_writer_lock_hold_ms', 'Writer-lock hold time per kernel write.', m.writerLockHoldMs[q], { quantile: q })),
    ...(['p50', 'p99', 'max'] as const).map((q) => g('imakeep_cycle_ms', 'Cycle duration.', m.cycleMs[q], { quantile: q })),
    ...Object.entries(m.errors).map(([code, n]) => c('imakeep_errors_total', 'Cycle failures by error code.', n, { code })),
    ...RECOVERY_PAUSE_REASONS.map((reason) =>
      g('imakeep_removal_paused', 'A pending removal left undecided (1): removal and the kernel part of the log wait, by reason.', s.recovery?.reason === reason ? 1 : 0, { reason }),
    ),
  ];
}

/** The daemon process's own memory (`process.memoryUsage()`), for `/v1/status` and `/metrics`. */
function processMemory(): Readonly<Record<string, number>> {
  const m = process.memoryUsage();
  return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, heapTotalBytes: m.heapTotal, externalBytes: m.external };
}

/** Prometheus samples of the daemon's memory (Invariant 4 is watched from outside through these). */
function processSamples(memory: Readonly<Record<string, number>>): MetricSample[] {
  return [
    { name: 'imakeep_process_resident_bytes', help: 'Resident set size of the daemon.', type: 'gauge', value: memory.rssBytes ?? 0 },
    { name: 'imakeep_process_heap_used_bytes', help: 'V8 heap in use.', type: 'gauge', value: memory.heapUsedBytes ?? 0 },
  ];
}

/** The hook of `IMAKEEP_TEST_CRASH_AT` (see `parseCrashAt`), or none. */
function crashHook(): CollectorHooks | undefined {
  const crash = parseCrashAt(process.env.IMAKEEP_TEST_CRASH_AT);
  if (crash === undefined || !(COLLECTOR_STEPS as readonly string[]).includes(crash.step)) return undefined;
  let seen = 0;
  return {
    step(step) {
      if (step === crash.step && ++seen >= crash.nth) process.kill(process.pid, 'SIGKILL');
    },
  };
}

const run: CliVerb = async (argv) => {
  const { values } = parseVerbArgs(
    argv,
    {
      securityfs: { type: 'string' },
      tpm: { type: 'string' },
      store: { type: 'string' },
      flavor: { type: 'string' },
      flavour: { type: 'string' },
      interval: { type: 'string' },
      socket: { type: 'string' },
      banks: { type: 'string' },
      'cycle-at-records': { type: 'string' },
      'chunk-bytes': { type: 'string' },
      'boot-id-file': { type: 'string' },
      'cmdline-file': { type: 'string' },
      once: { type: 'boolean' },
    },
    false,
  );
  const { tpm: tpmAddress, store: storeDir } = requireOptions(values, ['tpm', 'store']);
  const flavor = choiceOption('flavor', values.flavor ?? values.flavour ?? 'auto', FLAVORS);
  const chunkBytes = integerOption('chunk-bytes', values['chunk-bytes'], 1);
  const paths = daemonPaths(storeDir);
  const socket = values.socket ?? paths.socket;

  const unset = missingDaemonEnv();
  // glibc reads these at process start only: say so once rather than re-exec (a parent left
  // behind would outlive a SIGKILL of the child's supervisor and confuse the crash tests).
  if (unset.length > 0) process.stderr.write(`imakeep run: note: started without ${unset.join(' ')}: its anonymous memory can then grow with the log (README, "Running the daemon")\n`);
  const stop = interruptSignal();
  const store = await openStore(storeDir);
  const tpm = Tpm.open(tpmAddress);
  // The one owner of the TPM connection and AK: the cycle's checkpoints and the API's quotes go
  // through it in turn (a connection closed by one while the other's AK is loaded would flush it).
  const quoter = new TpmQuoter(tpm);
  try {
    const collector = await Collector.open({
      store,
      quotes: quoter,
      securityfsRoot: values.securityfs,
      cmdlinePath: values['cmdline-file'],
      bootIdPath: values['boot-id-file'],
      flavor,
      banks: banksOption('banks', values.banks),
      intervalMs: integerOption('interval', values.interval, 1),
      cycleAtRecords: integerOption('cycle-at-records', values['cycle-at-records'], 1),
      chunkBounds: chunkBytes === undefined ? undefined : { ...COLLECTOR_DEFAULTS.chunkBounds, maxBytes: chunkBytes },
      hooks: crashHook(),
    });
    // A socket left by a killed daemon (we hold the store lock, so no daemon serves it now).
    rmSync(socket, { force: true });
    const server = await startApiServer(
      {
        store,
        tail: {
          get boot() {
            return collector.boot;
          },
          end: async () => collector.kernelEnd(),
          records: (from) => collector.tailBatches(from),
        },
        status: {
          status: async () => ({ ...collector.status(), process: processMemory() }),
          metrics: async () => [...statusSamples(collector.status()), ...processSamples(processMemory())],
        },
        quotes: quoter,
      },
      { socket },
    );
    const s0 = collector.status();
    process.stdout.write(`imakeep run: boot ${s0.boot} (${s0.kernelBootId}), flavour ${s0.flavor} (${s0.flavorReason}), T=${s0.removed}, stored ${s0.stored}, serving ${server.address}\n`);
    try {
      if (values.once === true) {
        await collector.runOnce();
      } else {
        await collector.run(stop.signal, (report, error) => {
          collector.writeStatusFile(paths.statusFile);
          const s = collector.status();
          const what = report === undefined ? `failed: ${s.condition?.code ?? 'ERROR'}: ${s.condition?.message ?? String(error)}` : `drained ${report.drained} stored ${report.stored} checkpoint ${report.checkpoint ?? '-'} removed +${report.removed}`;
          process.stdout.write(`cycle ${s.metrics.cycles}: boot ${s.boot} T=${s.removed} kernel ${s.kernelRecords} ${what}\n`);
        });
      }
      collector.writeStatusFile(paths.statusFile);
    } finally {
      await server.close();
      await collector.close();
    }
    return 0;
  } finally {
    await store.close();
    await quoter.close();
    stop.dispose();
  }
};

export default run;
