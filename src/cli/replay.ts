/**
 * `imakeep replay FILE [--format binary|ascii] [--in-bank B] [--endian le|be]
 *                      [--bank B ...] [--padded] [--expect PCRS ...] [--threads N] [--json]`
 *
 * Streams a measurement list (FILE or `-` for stdin) through the PCR replay and prints the value
 * of every PCR the list extends, per bank. Without `--expect`: the banks named by `--bank` (default
 * all four), `native` or, with `--padded`, `padded` (docs/ima-formats.md#pcr-replay). A FILE of
 * `PARALLEL_MIN_BYTES` (16 MiB) or more is replayed by one thread per core, a share of the banks
 * each (`replayFile`); `--threads N` sets how many (0 or 1: this thread only); stdin is always
 * replayed in this thread. Output and errors are the same either way.
 *
 * `--expect` takes a capture's `pcrs.json` (`banks.<bank>.<index>` = hex) or evmctl-style
 * `pcr-<bank>.txt` (`PCR-NN: hex` lines; bank from the file name, or `bank,file`). Every expected
 * bank is replayed in both modes; the output says which matched. Exit 0 only if every expected bank
 * matches PCR 10 and every other PCR the list extends; else `IMA_REPLAY_MISMATCH`, exit 1.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { UsageError } from '../errors.js';
import {
  BANKS,
  DIGEST_SIZE,
  PcrReplay,
  ReplayError,
  fromHex,
  replayFile,
  replayList,
  toHex,
  type BankMode,
  type BankName,
  type PcrReplayOptions,
} from '../ima/index.js';
import { LIST_INPUT_OPTIONS, listStreamOptions, openListFile, openListInput } from './_ima-input.js';
import { bankArg, integerOption, parseVerbArgs, writeStdout, type CliVerb } from './_verb.js';

/** Usage of `imakeep replay`. */
export const usage = `usage: imakeep replay FILE [--format binary|ascii] [--in-bank B] [--endian le|be]
                      [--bank B ...] [--padded] [--expect [BANK,]PCRS ...] [--threads N] [--json]
FILE may be - (stdin). PCRS: a pcrs.json (banks.<bank>.<index> = hex) or a pcr-<bank>.txt (PCR-NN: hex).
Exit 0 only if every --expect bank matches; IMA_REPLAY_MISMATCH (exit 1) otherwise.`;

/** The IMA PCR every expected bank must match. */
const IMA_PCR = 10;

type ExpectedPcrs = Partial<Record<BankName, Map<number, Uint8Array>>>;

function pcrValue(bank: BankName, pcr: number, hex: unknown, file: string): Uint8Array {
  const bytes = typeof hex === 'string' ? fromHex(hex) : null;
  if (bytes === null || bytes.length !== DIGEST_SIZE[bank]) {
    throw new UsageError(`${file}: ${bank} PCR ${pcr} is not ${DIGEST_SIZE[bank]} bytes of hex`);
  }
  return bytes;
}

/** Reads one `--expect` argument: `[bank,]file` with a pcrs.json or a `PCR-NN: hex` file. */
function readExpected(arg: string, into: ExpectedPcrs): void {
  const comma = arg.indexOf(',');
  const named = comma > 0 && BANKS.some((b) => b === arg.slice(0, comma)) ? bankArg(arg.slice(0, comma), '--expect') : undefined;
  const file = named === undefined ? arg : arg.slice(comma + 1);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`--expect: cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (text.trimStart().startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new UsageError(`--expect: ${file} is not JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
    const banks = typeof json === 'object' && json !== null && 'banks' in json ? json.banks : undefined;
    if (typeof banks !== 'object' || banks === null) throw new UsageError(`--expect: ${file} has no "banks" object`);
    for (const [name, pcrs] of Object.entries(banks)) {
      const bank = BANKS.find((b) => b === name);
      if (bank === undefined || (named !== undefined && bank !== named) || typeof pcrs !== 'object' || pcrs === null) continue;
      const values = into[bank] ?? new Map<number, Uint8Array>();
      for (const [index, hex] of Object.entries(pcrs)) values.set(Number(index), pcrValue(bank, Number(index), hex, file));
      into[bank] = values;
    }
    return;
  }
  const fromName = /pcrs?-(sha1|sha256|sha384|sha512)\b/.exec(basename(file))?.[1];
  const bank = named ?? (fromName === undefined ? undefined : bankArg(fromName, '--expect'));
  if (bank === undefined) throw new UsageError(`--expect: cannot tell the bank of ${file}: name it pcr-<bank>.txt or pass <bank>,${file}`);
  const values = into[bank] ?? new Map<number, Uint8Array>();
  for (const line of text.split('\n')) {
    const m = /^PCR-(\d+):\s*([0-9a-fA-F]+)\s*$/.exec(line.trim());
    if (m === null) {
      if (line.trim() !== '') throw new UsageError(`--expect: ${file}: not a 'PCR-NN: hex' line: ${line.slice(0, 80)}`);
      continue;
    }
    values.set(Number(m[1]), pcrValue(bank, Number(m[1]), m[2], file));
  }
  into[bank] = values;
}

/** Outcome of one expected bank: the mode whose replay matched, or the mismatch. */
type BankVerdict = { readonly bank: BankName; readonly mode: BankMode } | { readonly bank: BankName; readonly error: ReplayError };

function verdict(bank: BankName, expected: Map<number, Uint8Array>, pcrs: number[], replays: readonly PcrReplay[]): BankVerdict {
  const wanted = Object.fromEntries(pcrs.filter((p) => expected.has(p)).map((p) => [p, expected.get(p) ?? new Uint8Array(0)]));
  let first: ReplayError | undefined;
  for (const replay of replays) {
    const mode = replay.banks[bank];
    if (mode === undefined) continue;
    try {
      replay.check({ [bank]: wanted });
      return { bank, mode };
    } catch (e) {
      if (!(e instanceof ReplayError)) throw e;
      first ??= e;
    }
  }
  if (first === undefined) throw new UsageError(`bank ${bank} was not replayed`);
  return { bank, error: first };
}

const replay: CliVerb = async (argv) => {
  const { values, positionals } = parseVerbArgs(argv, {
    ...LIST_INPUT_OPTIONS,
    expect: { type: 'string', multiple: true },
    bank: { type: 'string', multiple: true },
    padded: { type: 'boolean' },
    threads: { type: 'string' },
    json: { type: 'boolean' },
  });
  const file = positionals[0];
  if (file === undefined || positionals.length > 1) throw new UsageError('give exactly one FILE (- for stdin)');
  const listOptions = listStreamOptions(values);
  const threads = integerOption('threads', values.threads, 0);
  const expected: ExpectedPcrs = {};
  for (const arg of values.expect ?? []) readExpected(arg, expected);
  const expectedBanks = BANKS.filter((b) => expected[b] !== undefined);
  for (const bank of expectedBanks) {
    if (!expected[bank]?.has(IMA_PCR)) throw new UsageError(`--expect gives no ${bank} PCR ${IMA_PCR}`);
  }

  // With --expect, every expected bank is replayed natively (verifying the SHA-1 template digests)
  // and, except sha1, padded too: one pass over the list, the mode found by comparison.
  const plan: PcrReplayOptions[] = [];
  if (values.expect !== undefined) {
    plan.push({ banks: Object.fromEntries(expectedBanks.map((b) => [b, 'native'])), endian: listOptions.endian });
    const padded = expectedBanks.filter((b) => b !== 'sha1');
    if (padded.length > 0) {
      plan.push({ banks: Object.fromEntries(padded.map((b) => [b, 'padded'])), endian: listOptions.endian, verifyDigests: false });
    }
  } else {
    const banks = values.bank === undefined ? BANKS : values.bank.map((b) => bankArg(b, '--bank'));
    const mode: BankMode = values.padded === true ? 'padded' : 'native';
    plan.push({ banks: Object.fromEntries(banks.map((b) => [b, b === 'sha1' ? 'native' : mode])), endian: listOptions.endian });
  }

  let replays: PcrReplay[];
  if (file === '-') {
    replays = plan.map((p) => new PcrReplay(p));
    await replayList(await openListInput(file), replays, listOptions);
  } else {
    const handle = await openListFile(file);
    try {
      replays = await replayFile(handle, plan, { ...listOptions, ...(threads === undefined ? {} : { threads }) });
    } finally {
      await handle.close();
    }
  }

  const main = replays[0];
  if (main === undefined) throw new UsageError('nothing to replay');
  const pcrs = [...new Set([...main.pcrIndexes(), ...(expectedBanks.length > 0 ? [IMA_PCR] : [])])].sort((a, b) => a - b);
  const verdicts = expectedBanks.map((bank) => verdict(bank, expected[bank] ?? new Map(), pcrs, replays));
  const shown = replays.flatMap((r) => BANKS.filter((b) => r.banks[b] !== undefined).map((bank) => ({ replay: r, bank, mode: r.banks[bank] ?? 'native' })));

  if (values.json === true) {
    const out = {
      records: main.recordCount,
      banks: shown.map(({ replay: r, bank, mode }) => ({ bank, mode, pcrs: Object.fromEntries(pcrs.map((p) => [p, toHex(r.value(bank, p))])) })),
      expect: Object.fromEntries(verdicts.map((v) => [v.bank, 'mode' in v ? { match: true, mode: v.mode } : { match: false, error: v.error.message }])),
    };
    await writeStdout(`${JSON.stringify(out, null, 2)}\n`);
  } else {
    const lines = [`records ${main.recordCount}`];
    for (const { replay: r, bank, mode } of shown) {
      for (const p of pcrs) lines.push(`${bank.padEnd(6)} ${mode.padEnd(6)} PCR-${String(p).padStart(2, '0')}: ${toHex(r.value(bank, p))}`);
    }
    for (const v of verdicts) lines.push('mode' in v ? `${v.bank}: match (${v.mode})` : `${v.bank}: MISMATCH in every mode`);
    await writeStdout(`${lines.join('\n')}\n`);
  }
  const failed = verdicts.find((v): v is { bank: BankName; error: ReplayError } => 'error' in v);
  if (failed !== undefined) throw failed.error;
  return 0;
};

export default replay;
