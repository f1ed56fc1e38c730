/**
 * Measurement-list input shared by the `replay` and `convert` verbs: options naming the list's
 * format, bank and byte order, and the file (or stdin) as a stream of large chunks.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import type { ListStreamOptions } from '../ima/index.js';
import { bankArg, choiceOption } from './_verb.js';

/** parseArgs options describing an input list. */
export const LIST_INPUT_OPTIONS = {
  format: { type: 'string' },
  'in-bank': { type: 'string' },
  endian: { type: 'string' },
} as const;

/**
 * Read size: 256 KiB chunks keep the per-chunk cost (one await, one parser call) negligible
 * against hashing while memory stays flat (64 KiB reads already parsed a 1M-record list at full speed; bench/replay.ts).
 */
const CHUNK_BYTES = 256 * 1024;

/** The ListStreamOptions of `--format`, `--in-bank`, `--endian`. */
export function listStreamOptions(values: { format?: string; 'in-bank'?: string; endian?: string }): ListStreamOptions {
  const format = choiceOption('format', values.format ?? 'binary', ['binary', 'ascii'] as const);
  const endian = choiceOption('endian', values.endian ?? 'le', ['le', 'be'] as const);
  return { format, endian, bank: bankArg(values['in-bank'] ?? 'sha1', '--in-bank') };
}

/** FILE opened for reading; an unreadable file is a UsageError (exit 2). */
export async function openListFile(file: string): Promise<FileHandle> {
  try {
    return await open(file, 'r');
  } catch (e) {
    throw new UsageError(`cannot open ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** The chunks of FILE, or of stdin for `-`; an unreadable file is a UsageError (exit 2). */
export async function openListInput(file: string): Promise<AsyncIterable<Uint8Array>> {
  if (file === '-') return process.stdin;
  return (await openListFile(file)).createReadStream({ highWaterMark: CHUNK_BYTES });
}
