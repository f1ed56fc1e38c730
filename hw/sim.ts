/**
 * `npm run sim [-- OPTIONS]` (`node dist/hw/sim.js OPTIONS`): the Linux 7.2 securityfs emulator
 * (FUSE) in the foreground, fed records like a kernel, until SIGINT or SIGTERM; then it unmounts.
 * A development tool of the hardware harness, not part of the shipped `imakeep` command line
 * (which never loads hw/, see test/house/imports.test.ts). With no options: a private swtpm
 * (sha1, sha256), the emulator at /tmp/imakeep-sim, synthetic records at 5/s. A `swtpm:` TPM is
 * shared through the TPM proxy, whose `--tpm` address and tpm2-tools TCTI it prints.
 *
 * Errors: one line `sim: CODE: message` on stderr, exit status 2 for usage, 1 otherwise.
 */
import { parseArgs } from 'node:util';
import { ImakeepError, UsageError } from '../src/errors.js';
import { BANKS, type BankName } from '../src/ima/index.js';
import { runSimulation, type SimulationOptions } from './securityfs/simulate.js';
import { startSwtpm, type SwtpmInstance } from './swtpm.js';

/** Usage of the sim. */
export const usage =
  'usage: npm run sim -- [--mount DIR] [--tpm swtpm:HOST:PORT|none] [--source FILE|synthetic] [--rate R] [--count N]\n' +
  '                      [--banks sha1,sha256] [--flush-htable] [--no-staging] [--seed S]\n' +
  '  --mount  default /tmp/imakeep-sim   --tpm  default: a private swtpm; none: records are not extended\n' +
  '  --rate   records per second, default 5 (0: as fast as possible)';

const DEFAULT_MOUNT = '/tmp/imakeep-sim';
const DEFAULT_RATE = 5;

/** A number option of at least 0 (`--rate 0.5`: one record every two seconds), or undefined. */
function numberOption(name: string, value: string | undefined, integer: boolean): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  const ok = integer ? /^\d+$/.test(value) && Number.isSafeInteger(n) : value.trim() !== '' && Number.isFinite(n) && n >= 0;
  if (!ok) throw new UsageError(`--${name} must be a ${integer ? 'non-negative integer' : 'number >= 0'}, not '${value}'`);
  return n;
}

/** `--banks sha1,sha256`, or undefined. */
function banksOption(value: string | undefined): BankName[] | undefined {
  return value?.split(',').map((name) => {
    const bank = BANKS.find((b) => b === name);
    if (bank === undefined) throw new UsageError(`--banks: unknown bank '${name}' (${BANKS.join(', ')})`);
    return bank;
  });
}

/** The simulation `argv` asks for; `tpm` undefined: start a private swtpm. */
function parseSimArgs(argv: string[]): SimulationOptions & { readonly help: boolean } {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        mount: { type: 'string' },
        tpm: { type: 'string' },
        source: { type: 'string' },
        rate: { type: 'string' },
        count: { type: 'string' },
        banks: { type: 'string' },
        seed: { type: 'string' },
        'flush-htable': { type: 'boolean' },
        'no-staging': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  return {
    help: values.help === true,
    mountDir: values.mount ?? DEFAULT_MOUNT,
    tpm: values.tpm,
    source: values.source,
    rate: numberOption('rate', values.rate, false) ?? DEFAULT_RATE,
    count: numberOption('count', values.count, true),
    banks: banksOption(values.banks),
    seed: numberOption('seed', values.seed, true),
    flushHtable: values['flush-htable'] === true,
    staging: values['no-staging'] !== true,
  };
}

async function main(argv: string[]): Promise<number> {
  const { help, ...options } = parseSimArgs(argv);
  if (help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const abort = new AbortController();
  const stop = (): void => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const say = (line: string): void => void process.stdout.write(`${line}\n`);
  let swtpm: SwtpmInstance | undefined;
  try {
    if (options.tpm === undefined) {
      swtpm = await startSwtpm({ banks: ['sha1', 'sha256'] });
      say(`swtpm             ${swtpm.address}  (one client at a time: use the shared TPM below)`);
    }
    const tpm = options.tpm === 'none' ? undefined : (options.tpm ?? swtpm?.address);
    await runSimulation({ ...options, tpm }, abort.signal, say);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await swtpm?.stop();
  }
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  const code = e instanceof ImakeepError ? e.code : 'INTERNAL';
  process.stderr.write(`sim: ${code}: ${(e instanceof Error ? e.message : String(e)).replace(/\n/g, ' ')}${e instanceof UsageError ? ' (npm run sim -- --help)' : ''}\n`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
}
