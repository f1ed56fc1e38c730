import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../errors.js';
import { existsSync, readFileSync } from 'node:fs';
import { BANKS, type BankName } from '../ima/record.js';
import { DEFAULT_TPM_DEVICE } from '../tpm/index.js';

/**
 * A CLI verb: takes the arguments after its name, writes to stdout/stderr, returns the exit status.
 * Its module also exports `usage` (`usage: imakeep VERB ...`), which the dispatcher in `src/cli.ts`
 * prints for `--help`; verbs neither declare `--help` nor print their usage themselves.
 */
export type CliVerb = (argv: string[]) => Promise<number>;

type Options = NonNullable<ParseArgsConfig['options']>;

/** What `parseVerbArgs` returns: the typed option values and the positionals. */
export type ParsedVerbArgs<O extends Options> = ReturnType<
  typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: boolean }>
>;

/**
 * `util.parseArgs` with strict checking, turning its errors into UsageError (exit status 2).
 */
export function parseVerbArgs<O extends Options>(argv: string[], options: O, allowPositionals = true): ParsedVerbArgs<O> {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

/** `values` with the options `names` known to be given; else a UsageError naming every missing one. */
export function requireOptions<V extends object, K extends keyof V & string>(
  values: V,
  names: readonly K[],
): V & { [P in K]-?: NonNullable<V[P]> } {
  const missing = names.filter((name) => values[name] === undefined).map((name) => `--${name}`);
  if (missing.length === 1) throw new UsageError(`${missing.join('')} is required`);
  if (missing.length > 1) throw new UsageError(`${missing.slice(0, -1).join(', ')} and ${missing.slice(-1).join('')} are required`);
  // Checked just above, member by member: every name in `names` is defined.
  return values as V & { [P in K]-?: NonNullable<V[P]> };
}

/**
 * An integer option `--NAME` of at least `min` (0: a count or index, 1: a size or period), or
 * undefined when not given. Only decimal digits: `Number('')` is 0 and `Number('0x10')` 16.
 */
export function integerOption(name: string, value: string | undefined, min: 0 | 1): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${name} must be a ${min === 0 ? 'non-negative' : 'positive'} integer, not '${value}'`);
  }
  return n;
}

/** The value of option `--NAME` if it is one of `choices`, else a UsageError listing them. */
export function choiceOption<C extends string>(name: string, value: string, choices: readonly C[]): C {
  const choice = choices.find((c) => c === value);
  if (choice === undefined) throw new UsageError(`--${name} must be one of ${choices.join(', ')}, not '${value}'`);
  return choice;
}

/** A bank name given on the command line (`what` names the option), or a UsageError. */
export function bankArg(name: string, what: string): BankName {
  const bank = BANKS.find((b) => b === name);
  if (bank === undefined) throw new UsageError(`${what}: unknown bank '${name}' (${BANKS.join(', ')})`);
  return bank;
}

/** A comma-separated bank list option (`--banks sha1,sha256`), or undefined when not given. */
export function banksOption(name: string, value: string | undefined): BankName[] | undefined {
  return value?.split(',').map((b) => bankArg(b, `--${name}`));
}

/** A stop request by SIGINT or SIGTERM, for verbs that run until told to stop. */
export interface InterruptSignal {
  /** Aborted on the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** Resolves when `signal` aborts. */
  readonly interrupted: Promise<void>;
  /** Removes the signal handlers (call in `finally`). */
  dispose(): void;
}

/** Listens for SIGINT and SIGTERM until disposed; the first one aborts `signal`. */
export function interruptSignal(): InterruptSignal {
  const abort = new AbortController();
  const stop = (): void => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const interrupted = new Promise<void>((resolve) => abort.signal.addEventListener('abort', () => resolve(), { once: true }));
  return {
    signal: abort.signal,
    interrupted,
    dispose() {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    },
  };
}

/** Writes bytes or text to stdout and resolves once flushed (respects backpressure). */
export function writeStdout(data: Uint8Array | string): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(data, (err) => (err ? reject(err) : resolve()));
  });
}

/** The TPM address of `--tpm`, else `device:/dev/tpmrm0` when that device exists, else a UsageError. */
export function tpmAddress(given: string | undefined): string {
  if (given !== undefined) return given;
  if (existsSync(DEFAULT_TPM_DEVICE)) return `device:${DEFAULT_TPM_DEVICE}`;
  throw new UsageError(`no ${DEFAULT_TPM_DEVICE}: pass --tpm swtpm:HOST:PORT or --tpm device:PATH`);
}

/** Runs the subcommand `argv[0]` of verb `verb` from `subcommands`, or throws a UsageError naming them. */
export function runSubcommand(verb: string, subcommands: Readonly<Record<string, CliVerb>>, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const run = sub !== undefined && Object.hasOwn(subcommands, sub) ? subcommands[sub] : undefined;
  if (run === undefined) throw new UsageError(`unknown ${verb} subcommand '${sub ?? ''}' (one of ${Object.keys(subcommands).join(', ')})`);
  return run(rest);
}

/** Where a device's default id comes from: systemd's machine id (machine-id(5)). */
export const MACHINE_ID_PATH = '/etc/machine-id';

/**
 * The device id of `--device-id`, else the machine id ({@link MACHINE_ID_PATH}), else undefined:
 * `imakeep enroll request` and `imakeep run` default to the same id, so the enrollment names the
 * device id the collector's nonces bind.
 */
export function deviceIdOption(given: string | undefined): string | undefined {
  if (given !== undefined) return given;
  try {
    return readFileSync(MACHINE_ID_PATH, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
