/**
 * `npm run bench`: every bench module in turn, each in its own process (clean RSS and CPU
 * figures, and one failing module does not stop the others), then one summary.
 *
 *   node dist/bench/index.js [--quick] [--only memory-pressure,replay,...] [-- ARGS for memory-pressure]
 *
 * A module missing from the build or failing is reported with its error, and the run goes on.
 * Tables (markdown) go to stdout as each module prints them; progress goes to stderr. Writes
 * bench/results/summary.json (the machine, every module's status, headline figures and output)
 * and bench/results/README.md (the tables), next to each module's own JSON and SVGs.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../hw/collector-process.js';
import { describeMachine, machineLine } from './_machine.js';
import { BENCH_MODULES, headlineOf, plotsOf, summaryTable, type BenchModule, type ModuleOutcome } from './_summary.js';

const RESULTS = join(REPO_ROOT, 'bench', 'results');

function fresh(file: string, since: number): boolean {
  return existsSync(file) && statSync(file).mtimeMs >= since;
}

/** Runs one module; its stdout is echoed and kept, its stderr echoed and its tail kept. */
function runModule(m: BenchModule, quick: boolean, extraArgs: readonly string[]): Promise<ModuleOutcome> {
  const file = join(REPO_ROOT, 'dist', 'bench', `${m.name}.js`);
  const args = [...(quick ? m.quickArgs : m.args), ...extraArgs];
  const command = `node dist/bench/${m.name}.js ${args.join(' ')}`.trim();
  const base = { name: m.name, what: m.what, command, headline: {}, plots: [], stdout: '' };
  if (!existsSync(file)) {
    return Promise.resolve({ ...base, status: 'missing', exitCode: null, seconds: 0, error: `not yet: dist/bench/${m.name}.js is not built (bench/${m.name}.ts missing)` });
  }
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderrTail = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString('utf8');
      process.stdout.write(d);
    });
    child.stderr.on('data', (d: Buffer) => {
      stderrTail = (stderrTail + d.toString('utf8')).slice(-2000);
      process.stderr.write(d);
    });
    child.once('error', (err) => resolve({ ...base, status: 'failed', exitCode: null, seconds: 0, error: err.message }));
    child.once('exit', (code, signal) => {
      const seconds = (Date.now() - started) / 1000;
      const jsonFile = m.json === undefined ? undefined : join(RESULTS, m.json);
      let headline: Record<string, string> = {};
      let plots: string[] = [];
      let json: string | undefined;
      if (jsonFile !== undefined && fresh(jsonFile, started)) {
        json = `bench/results/${m.json}`;
        try {
          const parsed: unknown = JSON.parse(readFileSync(jsonFile, 'utf8'));
          headline = headlineOf(m.name, parsed);
          plots = plotsOf(parsed);
        } catch (err) {
          headline = { error: `unreadable JSON: ${String(err)}` };
        }
      }
      const ok = code === 0;
      resolve({
        ...base,
        status: ok ? 'ok' : 'failed',
        exitCode: code,
        seconds,
        stdout,
        headline,
        plots,
        ...(json === undefined ? {} : { json }),
        ...(ok ? {} : { error: `exit ${code ?? signal}: ${stderrTail.trim().split('\n').slice(-6).join(' / ')}` }),
      });
    });
  });
}

async function main(argv: readonly string[]): Promise<number> {
  const dashDash = argv.indexOf('--');
  const own = dashDash < 0 ? argv : argv.slice(0, dashDash);
  const forwarded = dashDash < 0 ? [] : argv.slice(dashDash + 1);
  const { values } = parseArgs({ args: [...own], options: { quick: { type: 'boolean' }, only: { type: 'string' } }, strict: true });
  const only = values.only?.split(',');
  const modules = BENCH_MODULES.filter((m) => only === undefined || only.includes(m.name));
  const machine = describeMachine();
  const quick = values.quick === true;
  mkdirSync(RESULTS, { recursive: true });
  process.stdout.write(`# imakeep bench${quick ? ' (quick)' : ''}\n\nmachine: ${machineLine(machine)}\n\n`);
  const outcomes: ModuleOutcome[] = [];
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  // The running module gets the same SIGINT from the terminal and cleans up; then we stop.
  process.on('SIGINT', onSignal);
  try {
    for (const m of modules) {
      if (interrupted) break;
      process.stderr.write(`\n=== bench ${m.name}: ${m.what}\n`);
      process.stdout.write(`## ${m.name}\n\n`);
      const outcome = await runModule(m, quick, m.name === 'memory-pressure' ? forwarded : []);
      if (outcome.status !== 'ok') process.stdout.write(`${outcome.status}: ${outcome.error ?? ''}\n`);
      process.stdout.write('\n');
      outcomes.push(outcome);
    }
  } finally {
    process.off('SIGINT', onSignal);
  }
  const table = summaryTable(outcomes);
  process.stdout.write(`## Summary\n\n${table}\n`);
  const summary = { date: new Date().toISOString(), command: `node dist/bench/index.js ${argv.join(' ')}`.trim(), machine, quick, modules: outcomes };
  writeFileSync(join(RESULTS, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  const tables = outcomes.map((o) => {
    const body = o.status === 'ok' ? o.stdout.trim() : `${o.status}: ${o.error ?? ''}`;
    const images = o.plots.map((p) => `![${p}](${p})`).join('\n');
    return `## ${o.name}\n\n${o.what}. \`${o.command}\`\n\n${body}\n${images === '' ? '' : `\n${images}\n`}`;
  });
  writeFileSync(
    join(RESULTS, 'README.md'),
    `# Bench results\n\n${summary.date}, ${machineLine(machine)}. Regenerate with \`npm run bench\`.\n\n${table}\n\n${tables.join('\n')}`,
  );
  if (interrupted) return 130;
  return outcomes.some((o) => o.status === 'failed') ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
