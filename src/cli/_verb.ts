import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../errors.js';

/** A CLI verb: takes the arguments after its name, writes to stdout/stderr, returns the exit status. */
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

/** Writes bytes or text to stdout and resolves once flushed (respects backpressure). */
export function writeStdout(data: Uint8Array | string): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(data, (err) => (err ? reject(err) : resolve()));
  });
}
