/**
 * Policy bench (issue 14): records judged per second by `imakeep policy check` against
 * `imakeep replay` (what `imakeep verify` does to records: parse, SHA-1 template-digest check,
 * replay of the sha1 and sha256 banks) on the same 1,000,000-record log, in one run.
 *
 * The log is deterministic (ImaWorkload seed 2026, ima-ng, sha256 file hashes), the policy is
 * `imakeep policy create` of that log (every record passes: the judge runs its whole path for
 * each, no finding is written). Each command is its own process under `/usr/bin/time -f %M` (peak
 * RSS); the variants are interleaved within each repeat so a change of machine load hits all:
 *   - replay: `imakeep replay LOG --bank sha1 --bank sha256 --threads 1 --json`;
 *   - check:  `imakeep policy check LOG --policy P`;
 *   - load:   `imakeep policy check EMPTY --policy P` (start-up and policy loading alone), so
 *     that check − load is the judging itself.
 * Records/s are over process wall time (median of the repeats), and over user + system CPU time,
 * which a loaded machine disturbs less. Writes bench/results/policy.json.
 *
 * Result (`node dist/bench/policy.js 1000000 3`, 2 vCPUs shared with other jobs, load average 24-31,
 * 06:59-07:13 UTC 2026-12-05; the policy lists 1,000,000 digests over 143,184 paths, 72 MB):
 *   replay (verify alone) 26,841 records/s (440,529 per CPU second), 56 MiB;
 *   policy check 7,431 records/s (114,155 per CPU second): 0.28x replay (0.26x by CPU), 261 MiB;
 *   policy load alone 2.25 CPU s, 214 MiB (wall 31.6 s on that machine).
 * Before the compact index (04:57-05:01 UTC, load average 26): load alone 15.0 s wall, 483 MiB;
 * check 0.26x replay by wall time. Wall times on a machine this loaded mostly measure the queue:
 * compare the CPU columns and the ratios of one run.
 *
 *   node dist/bench/policy.js [records] [repeats]      (default 1000000 3)
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeBinaryRecord } from '../src/ima/index.js';
import { describeMachine, machineLine } from './_machine.js';
import { ImaWorkload } from '../src/testing/index.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(REPO, 'dist/src/cli.js');

function generateLog(file: string, count: number): void {
  const workload = new ImaWorkload({ seed: 2026, template: 'ima-ng' });
  const fd = openSync(file, 'w');
  let batch: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    batch.push(encodeBinaryRecord(workload.next()));
    if (batch.length === 10_000 || i === count - 1) {
      writeSync(fd, Buffer.concat(batch));
      batch = [];
    }
  }
  closeSync(fd);
}

interface Run {
  readonly seconds: number;
  /** User + system CPU seconds: what the work costs, whatever else the machine runs. */
  readonly cpuSeconds: number;
  readonly peakRssMiB: number;
  readonly status: number | null;
}

/** One process under /usr/bin/time: wall seconds, CPU seconds and peak RSS. */
function timed(args: string[]): Run {
  const start = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S %M', process.execPath, CLI, ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const [user = NaN, system = NaN, rssKiB = NaN] = (/([\d.]+) ([\d.]+) (\d+)\s*$/.exec(r.stderr.trim()) ?? []).slice(1).map(Number);
  return { seconds, cpuSeconds: user + system, peakRssMiB: Math.round((rssKiB / 1024) * 10) / 10, status: r.status };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

function main(): void {
  const records = Number(process.argv[2] ?? 1_000_000);
  const repeats = Number(process.argv[3] ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-bench-policy-'));
  try {
    const log = join(dir, 'log.bin');
    const empty = join(dir, 'empty.bin');
    const policy = join(dir, 'policy.json');
    generateLog(log, records);
    writeFileSync(empty, new Uint8Array(0));
    const made = spawnSync(process.execPath, [CLI, 'policy', 'create', log, '--out', policy], { encoding: 'utf8' });
    if (made.status !== 0) throw new Error(`policy create failed: ${made.stderr}`);
    const variants: Record<string, { args: string[]; runs: Run[] }> = {
      replay: { args: ['replay', log, '--bank', 'sha1', '--bank', 'sha256', '--threads', '1', '--json'], runs: [] },
      check: { args: ['policy', 'check', log, '--policy', policy], runs: [] },
      load: { args: ['policy', 'check', empty, '--policy', policy], runs: [] },
    };
    for (let i = 0; i < repeats; i++) {
      for (const [name, v] of Object.entries(variants)) {
        const run = timed(v.args);
        if (run.status !== 0) throw new Error(`${name} exited ${run.status}`);
        v.runs.push(run);
      }
    }
    const seconds = (name: string): number => median(variants[name]?.runs.map((r) => r.seconds) ?? []);
    const cpu = (name: string): number => median(variants[name]?.runs.map((r) => r.cpuSeconds) ?? []);
    const rss = (name: string): number => median(variants[name]?.runs.map((r) => r.peakRssMiB) ?? []);
    const replayRate = records / seconds('replay');
    const checkRate = records / seconds('check');
    const judgeRate = records / (seconds('check') - seconds('load'));
    const replayCpuRate = records / cpu('replay');
    const checkCpuRate = records / cpu('check');
    const result = {
      machine: describeMachine(),
      records,
      repeats,
      commands: Object.fromEntries(Object.entries(variants).map(([name, v]) => [name, `imakeep ${v.args.join(' ')}`])),
      seconds: { replay: seconds('replay'), check: seconds('check'), load: seconds('load') },
      cpuSeconds: { replay: cpu('replay'), check: cpu('check'), load: cpu('load') },
      recordsPerSecond: { replay: Math.round(replayRate), check: Math.round(checkRate), judgeOnly: Math.round(judgeRate) },
      recordsPerCpuSecond: { replay: Math.round(replayCpuRate), check: Math.round(checkCpuRate) },
      checkOverReplay: Math.round((checkRate / replayRate) * 100) / 100,
      checkOverReplayCpu: Math.round((checkCpuRate / replayCpuRate) * 100) / 100,
      peakRssMiB: { replay: rss('replay'), check: rss('check'), load: rss('load') },
    };
    mkdirSync(join(REPO, 'bench/results'), { recursive: true });
    writeFileSync(join(REPO, 'bench/results/policy.json'), `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(
      `${machineLine(result.machine)}\n${records} records, median of ${repeats}:\n` +
        `  replay (verify alone): ${Math.round(replayRate)} records/s, ${rss('replay')} MiB\n` +
        `  policy check:          ${Math.round(checkRate)} records/s, ${rss('check')} MiB (${result.checkOverReplay}x replay)\n` +
        `  policy load alone:     ${seconds('load').toFixed(2)} s (${cpu('load').toFixed(2)} CPU s), ${rss('load')} MiB; judging alone ${Math.round(judgeRate)} records/s\n` +
        `  per CPU second:        replay ${Math.round(replayCpuRate)}, check ${Math.round(checkCpuRate)} records (${result.checkOverReplayCpu}x)\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
