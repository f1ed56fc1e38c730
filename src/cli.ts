#!/usr/bin/env node
/**
 * imakeep command line: a thin wrapper over the library. Each verb lives in `src/cli/<verb>.ts`
 * and is loaded only when called, so `imakeep replay` never loads the TPM or LevelDB code.
 *
 * Every error, in every verb: exit status 1 (2 for usage), one line on stderr
 * `imakeep: CODE: message`, no stack trace unless `--debug`; a usage error names where the usage
 * is: `imakeep: USAGE: message (imakeep VERB --help)`. `--help` or `-h` anywhere after the verb
 * prints the verb module's `usage` and exits 0, without running the verb. A reader of stdout that
 * goes away (`imakeep convert FILE --to ascii | head -1`: EPIPE) ends the command quietly with
 * status 0, as it ends `cat`: the output was wanted only that far.
 */
import { ImakeepError, UsageError } from './errors.js';
import type { CliVerb } from './cli/_verb.js';

/** What a verb module exports: the verb and its usage text (`usage: imakeep VERB ...`). */
interface VerbModule {
  readonly default: CliVerb;
  readonly usage: string;
}

const VERBS: Record<string, { summary: string; load: () => Promise<VerbModule> }> = {
  replay: { summary: 'replay a measurement list to PCR values', load: () => import('./cli/replay.js') },
  convert: { summary: 'convert a measurement list between kernel formats', load: () => import('./cli/convert.js') },
  tpm: { summary: 'TPM: pcrread, quote, verify', load: () => import('./cli/tpm.js') },
  run: { summary: 'the collector daemon: store, quote, remove, serve', load: () => import('./cli/run.js') },
  status: { summary: 'store boots and collector status', load: () => import('./cli/status.js') },
  log: { summary: 'the whole log (stored + kernel) in kernel formats', load: () => import('./cli/log.js') },
  serve: { summary: 'serve the log, quotes and evidence over HTTP (unix socket)', load: () => import('./cli/serve.js') },
  export: { summary: 'write an evidence bundle from a cursor to a file', load: () => import('./cli/export.js') },
  verify: { summary: 'verify evidence bundles or a log offline', load: () => import('./cli/verify.js') },
  policy: { summary: 'judge a log against a Keylime runtime policy; make one', load: () => import('./cli/policy.js') },
  fleet: { summary: 'the fleet service devices sync their evidence to', load: () => import('./cli/fleet.js') },
  enroll: { summary: 'enroll a device: EK certificate, AK, credential activation', load: () => import('./cli/enroll.js') },
  keylime: { summary: 'register with a Keylime registrar (the body, or register and activate)', load: () => import('./cli/keylime.js') },
};

function usage(): string {
  const lines = Object.entries(VERBS).map(([name, v]) => `  ${name.padEnd(10)} ${v.summary}`);
  return ['usage: imakeep <verb> [options]   (--debug for stack traces)', '', ...lines, ''].join('\n');
}

/** True for the error of a write to a pipe whose reader closed it. */
function isReaderGone(e: unknown): boolean {
  return e instanceof Error && (e as NodeJS.ErrnoException).code === 'EPIPE';
}

/** Runs the command line `argv` (without `node` and the script) and returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug');
  const args = argv.filter((a) => a !== '--debug');
  const verbName = args[0];
  try {
    if (verbName === undefined || verbName === '--help' || verbName === '-h') {
      process.stdout.write(usage());
      return verbName === undefined ? 2 : 0;
    }
    const verb = Object.hasOwn(VERBS, verbName) ? VERBS[verbName] : undefined;
    if (verb === undefined) throw new UsageError(`unknown verb '${verbName}' (imakeep --help)`);
    const mod = await verb.load();
    const rest = args.slice(1);
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(`${mod.usage}\n`);
      return 0;
    }
    return await mod.default(rest);
  } catch (e) {
    if (isReaderGone(e)) return 0;
    if (debug) process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    if (e instanceof ImakeepError) {
      // One line, always: point at the verb's usage rather than print it.
      const help = e instanceof UsageError && verbName !== undefined && Object.hasOwn(VERBS, verbName) ? ` (imakeep ${verbName} --help)` : '';
      process.stderr.write(`imakeep: ${e.code}: ${e.message.replace(/\n/g, ' ')}${help}\n`);
      return e instanceof UsageError ? 2 : 1;
    }
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`imakeep: INTERNAL: ${msg}\n`);
    return 1;
  }
}

// EPIPE on stdout also arrives as an 'error' event (unhandled, it would print a stack trace).
process.stdout.on('error', (e) => {
  if (!isReaderGone(e)) throw e;
  process.exit(0);
});
process.exitCode = await main(process.argv.slice(2));
