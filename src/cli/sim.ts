/**
 * `imakeep sim`: runs the Linux 7.2 securityfs emulator (FUSE) in the foreground until SIGINT or
 * SIGTERM, then unmounts. Test and demo component: it lives in hw/, loaded only by this verb.
 */
import { UsageError } from '../errors.js';
import { BANKS, type BankName } from '../ima/record.js';
import { runSimulation } from '../../hw/securityfs/index.js';
import { parseVerbArgs, type CliVerb } from './_verb.js';

const USAGE =
  'usage: imakeep sim --mount DIR [--tpm swtpm:HOST:PORT] [--source FILE|synthetic] [--rate R] [--count N]\n' +
  '                   [--banks sha1,sha256] [--flush-htable] [--no-staging] [--seed S]';

function numberOption(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number >= 0\n${USAGE}`);
  return n;
}

function banksOption(value: string | undefined): BankName[] | undefined {
  if (value === undefined) return undefined;
  const banks = value.split(',');
  const bad = banks.filter((b) => !(BANKS as readonly string[]).includes(b));
  if (bad.length > 0) throw new UsageError(`unknown bank ${bad.join(',')} (one of ${BANKS.join(', ')})`);
  return banks as BankName[];
}

const sim: CliVerb = async (argv) => {
  const { values } = parseVerbArgs(
    argv,
    {
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
    false,
  );
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.mount === undefined) throw new UsageError(`--mount is required\n${USAGE}`);
  const abort = new AbortController();
  const stop = () => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await runSimulation(
      {
        mountDir: values.mount,
        tpm: values.tpm,
        source: values.source,
        rate: numberOption('rate', values.rate),
        count: numberOption('count', values.count),
        banks: banksOption(values.banks),
        seed: numberOption('seed', values.seed),
        flushHtable: values['flush-htable'] === true,
        staging: values['no-staging'] !== true,
      },
      abort.signal,
      (line) => process.stdout.write(`${line}\n`),
    );
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  return 0;
};

export default sim;
