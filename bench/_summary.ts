/**
 * What `npm run bench` runs and how it summarizes: the module list, headline figures picked from
 * each module's JSON, the summary table. Pure; bench/index.ts does the running.
 */

/** A bench module: its built file, its arguments (full and quick), the JSON it writes. */
export interface BenchModule {
  readonly name: string;
  /** What it compares, for the summary. */
  readonly what: string;
  readonly args: readonly string[];
  readonly quickArgs: readonly string[];
  /** File name in bench/results/, if the module writes one. */
  readonly json?: string;
}

/** Every module, in the order they run (memory-pressure first: the headline of issue 7). */
export const BENCH_MODULES: readonly BenchModule[] = [
  { name: 'memory-pressure', what: 'kernel list memory: no collector vs flavour n vs staged + ima_flush_htable; collector RSS, CPU, flash writes', args: [], quickArgs: ['--seconds', '8', '--tail', '3'], json: 'memory-pressure.json' },
  { name: 'ingest', what: 'collector ingest records/s and CPU per record, writer-lock hold time', args: [], quickArgs: ['--quick'], json: 'ingest.json' },
  { name: 'serve', what: 'serve MB/s vs Keylime-style whole-tail reads', args: [], quickArgs: ['--quick'], json: 'serve.json' },
  { name: 'replay', what: 'streaming parse + PCR replay vs evmctl', args: [], quickArgs: ['200000', '1'], json: 'replay.json' },
  { name: 'tpm', what: 'quote and PCR read vs tpm2-tools', args: [], quickArgs: ['--quick'], json: 'tpm.json' },
  { name: 'store', what: 'LevelDB settings for a small device', args: [], quickArgs: ['50000'] },
];

/** How one module went. */
export interface ModuleOutcome {
  readonly name: string;
  readonly what: string;
  readonly status: 'ok' | 'missing' | 'failed';
  readonly exitCode: number | null;
  readonly seconds: number;
  readonly command: string;
  /** For `missing` and `failed`: why (the tail of stderr for a failure). */
  readonly error?: string;
  /** Its JSON in bench/results/, when written by this run. */
  readonly json?: string;
  /** A few figures from that JSON, for the summary table. */
  readonly headline: Readonly<Record<string, string>>;
  /** SVG files it wrote in bench/results/ (its JSON's `plots`). */
  readonly plots: readonly string[];
  /** What it printed on stdout (its tables). */
  readonly stdout: string;
}

/** A few figures worth a glance, from a module's JSON; unknown shapes give nothing (the JSON has it all). */
export function headlineOf(name: string, json: unknown): Record<string, string> {
  const get = (path: readonly (string | number)[]): unknown =>
    path.reduce<unknown>((v, k) => (typeof v === 'object' && v !== null ? (v as Record<string | number, unknown>)[k] : undefined), json);
  const num = (v: unknown, digits = 0): string | undefined =>
    typeof v === 'number' && Number.isFinite(v) ? v.toLocaleString('en-US', { maximumFractionDigits: digits }) : undefined;
  const out: Record<string, string> = {};
  const put = (key: string, value: string | undefined) => {
    if (value !== undefined) out[key] = value;
  };
  switch (name) {
    case 'replay':
      put('ours ÷ evmctl (records/s)', num(get(['oursOverEvmctl']), 2));
      break;
    case 'tpm':
      put('pcrRead speedup vs tpm2-tools', num(get(['speedupMedian', 'pcrRead']), 1));
      put('quote speedup vs tpm2-tools', num(get(['speedupMedian', 'quoteEcc']), 1));
      break;
    case 'memory-pressure': {
      const runs = get(['runs']);
      if (!Array.isArray(runs)) break;
      for (const r of runs as unknown[]) {
        const run = r as { workload?: unknown; mode?: unknown; status?: unknown; summary?: { kmemEndBytes?: unknown } };
        const kmem = run.summary?.kmemEndBytes;
        put(`${String(run.workload)}/${String(run.mode)} kernel KiB at end`, run.status === 'ok' && typeof kmem === 'number' ? num(kmem / 1024) : String(run.status));
      }
      break;
    }
    case 'ingest': {
      const runs = get(['runs']);
      if (!Array.isArray(runs)) break;
      runs.forEach((_, i) => {
        const flavor = String(get(['runs', i, 'flavor']));
        put(`flavour ${flavor} records/s`, num(get(['runs', i, 'recordsPerSecond'])));
        put(`flavour ${flavor} write amplification`, num(get(['runs', i, 'writeAmplification']), 2));
      });
      break;
    }
    case 'serve': {
      const cases = get(['cases']);
      if (!Array.isArray(cases)) break;
      cases.forEach((_, i) => {
        if (get(['cases', i, 'from']) !== 0) return;
        put(`${String(get(['cases', i, 'server']))} ${String(get(['cases', i, 'format']))} MB/s`, num(get(['cases', i, 'mbPerS']), 1));
      });
      put('Keylime-style ÷ imakeep peak memory', num(get(['keylimeOverImakeepPeakMemoryFromZero']), 1));
      break;
    }
    default:
      break;
  }
  return out;
}

/** The `plots` list of a module's JSON (file names in bench/results/). */
export function plotsOf(json: unknown): string[] {
  const plots = typeof json === 'object' && json !== null && 'plots' in json ? json.plots : undefined;
  return Array.isArray(plots) ? plots.filter((p): p is string => typeof p === 'string') : [];
}

/** The summary table (markdown). */
export function summaryTable(outcomes: readonly ModuleOutcome[]): string {
  const rows = outcomes.map((o) => {
    const figures = Object.entries(o.headline).map(([k, v]) => `${k}: ${v}`).join('; ');
    const detail = o.status === 'ok' ? figures || (o.json ?? 'tables above') : (o.error ?? '').replace(/\|/g, '/');
    return `| ${o.name} | ${o.status} | ${o.seconds.toFixed(0)} | ${detail} |`;
  });
  return ['| bench | status | seconds | figures / error |', '|---|---|---:|---|', ...rows].join('\n');
}

