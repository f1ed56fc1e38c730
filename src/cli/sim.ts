/**
 * `imakeep sim`: runs the Linux 7.2 securityfs emulator (FUSE) in the foreground until SIGINT or
 * SIGTERM, then unmounts. Test and demo component: it lives in hw/, loaded only by this verb.
 */
import { UsageError } from '../errors.js';
import { runSimulation } from '../../hw/securityfs/index.js';
import { banksOption, integerOption, interruptSignal, parseVerbArgs, requireOptions, type CliVerb } from './_verb.js';

/** Usage of `imakeep sim`. */
export const usage =
  'usage: imakeep sim --mount DIR [--tpm swtpm:HOST:PORT] [--source FILE|synthetic] [--rate R] [--count N]\n' +
  '                   [--banks sha1,sha256] [--flush-htable] [--no-staging] [--seed S]';

/** `--rate`: records per second, fractions allowed (0.5: one record every two seconds). */
function rateOption(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new UsageError(`--rate must be a number >= 0, not '${value}'`);
  return n;
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
    },
    false,
  );
  const { mount } = requireOptions(values, ['mount']);
  const options = {
    mountDir: mount,
    tpm: values.tpm,
    source: values.source,
    rate: rateOption(values.rate),
    count: integerOption('count', values.count, 0),
    banks: banksOption('banks', values.banks),
    seed: integerOption('seed', values.seed, 0),
    flushHtable: values['flush-htable'] === true,
    staging: values['no-staging'] !== true,
  };
  const stop = interruptSignal();
  try {
    await runSimulation(options, stop.signal, (line) => process.stdout.write(`${line}\n`));
  } finally {
    stop.dispose();
  }
  return 0;
};

export default sim;
