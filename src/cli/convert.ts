/**
 * `imakeep convert FILE --to ascii|binary [--bank B] [--mode native|padded]
 *                       [--format binary|ascii] [--in-bank B] [--endian le|be]`
 *
 * Streams a measurement list (FILE or `-`) to stdout as the kernel would show it:
 * `--to ascii` → `ascii_runtime_measurements[_<bank>]`, `--to binary` →
 * `binary_runtime_measurements[_<bank>]` as a >= 6.10 kernel shows it (docs/ima-formats.md).
 * `--bank` (default sha1) picks the bank whose template digests the output shows, `--mode` how the
 * kernel extended it (native H_bank(data) or the padded SHA-1 digest). The output keeps the input's
 * byte order (`--endian`): template data carry their list's byte order and their digests were
 * computed over it.
 */
import { UsageError } from '../errors.js';
import { concatBytes, encodeBinaryRecord, formatAsciiLineBytes, recordBatches } from '../ima/index.js';
import { LIST_INPUT_OPTIONS, listStreamOptions, openListInput } from './_ima-input.js';
import { bankArg, choiceOption, parseVerbArgs, requireOptions, writeStdout, type CliVerb } from './_verb.js';

/** Usage of `imakeep convert`. */
export const usage = `usage: imakeep convert FILE --to ascii|binary [--bank sha1|sha256|sha384|sha512] [--mode native|padded]
                       [--format binary|ascii] [--in-bank B] [--endian le|be]
FILE may be - (stdin). The output keeps the input's byte order.`;

const convert: CliVerb = async (argv) => {
  const { values, positionals } = parseVerbArgs(argv, {
    ...LIST_INPUT_OPTIONS,
    to: { type: 'string' },
    bank: { type: 'string' },
    mode: { type: 'string' },
  });
  const file = positionals[0];
  if (file === undefined || positionals.length > 1) throw new UsageError('give exactly one FILE (- for stdin)');
  const to = choiceOption('to', requireOptions(values, ['to']).to, ['ascii', 'binary'] as const);
  const mode = choiceOption('mode', values.mode ?? 'native', ['native', 'padded'] as const);
  const listOptions = listStreamOptions(values);
  const out = { bank: bankArg(values.bank ?? 'sha1', '--bank'), mode, endian: listOptions.endian };
  const toAscii = to === 'ascii';
  let index = 0;
  for await (const batch of recordBatches(await openListInput(file), listOptions)) {
    const encoded = batch.map((rec) => (toAscii ? formatAsciiLineBytes(rec, out, index++) : encodeBinaryRecord(rec, out)));
    await writeStdout(concatBytes(encoded));
  }
  return 0;
};

export default convert;
