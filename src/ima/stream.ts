/**
 * Lists from a stream of byte chunks (a file, stdin, a securityfs read loop): records in batches,
 * one batch per chunk, so a consumer pays one await per chunk, not per record. Memory stays one
 * chunk plus one incomplete record whatever the list's length.
 */
import { DIGEST_SIZE, type BankName, type ImaRecord } from './record.js';
import { BinaryListParser } from './binary.js';
import { AsciiListParser } from './ascii.js';
import { toSha1Record } from './digest.js';
import type { Endian } from './hash.js';
import type { PcrReplay } from './replay.js';

/** Which list a stream holds. */
export interface ListStreamOptions {
  /** `binary` (default) or `ascii`. */
  readonly format?: 'binary' | 'ascii';
  /** Bank of the list (its digests); default sha1. Records of other banks are turned into SHA-1 form. */
  readonly bank?: BankName;
  /** Byte order of the list; default `le`. */
  readonly endian?: Endian;
}

/**
 * Parses a list from chunks into batches of records in SHA-1 form ({@link ImaRecord}); throws
 * `IMA_TRUNCATED` at the end if the list stops inside a record or line.
 */
export async function* recordBatches(chunks: AsyncIterable<Uint8Array>, opts: ListStreamOptions = {}): AsyncGenerator<ImaRecord[]> {
  const bank = opts.bank ?? 'sha1';
  const endian = opts.endian ?? 'le';
  const parser =
    opts.format === 'ascii' ? new AsciiListParser({ bank, endian }) : new BinaryListParser({ digestSize: DIGEST_SIZE[bank], endian });
  for await (const chunk of chunks) {
    const records = parser.push(chunk);
    if (records.length > 0) yield bank === 'sha1' ? records : records.map((r) => toSha1Record(r, endian));
  }
  parser.end();
}

/**
 * Streams a list into `replays` (each record extends each replay, in order) and returns the
 * number of records read. Records are not kept: a SHA-1 binary list is replayed straight from the
 * chunks ({@link BinaryListParser.pushEach}, no copy, no per-chunk array), so memory stays one
 * chunk plus one record and the garbage per record dies young. Other lists go through
 * {@link recordBatches}. Errors are the parser's and the replays' (`IMA_DIGEST_MISMATCH` with the
 * record index); the first one stops the list there.
 */
export async function replayList(
  chunks: AsyncIterable<Uint8Array>,
  replays: readonly PcrReplay[],
  opts: ListStreamOptions = {},
): Promise<number> {
  const visit = (rec: ImaRecord): void => {
    for (const replay of replays) replay.extend(rec);
  };
  let count = 0;
  if ((opts.format ?? 'binary') === 'binary' && (opts.bank ?? 'sha1') === 'sha1') {
    const parser = new BinaryListParser({ endian: opts.endian ?? 'le' });
    for await (const chunk of chunks) count += parser.pushEach(chunk, visit);
    parser.end();
    return count;
  }
  for await (const batch of recordBatches(chunks, opts)) {
    for (const rec of batch) visit(rec);
    count += batch.length;
  }
  return count;
}
