/**
 * Judging a whole list from a stream of byte chunks (a file, stdin, an HTTP body) with memory
 * bounded by one chunk and one record: a SHA-1 binary list is judged straight from the chunks
 * (`BinaryListParser.pushEach`, no copy), other lists through `recordBatches`.
 */
import { BinaryListParser, recordBatches, type ImaRecord, type ListStreamOptions } from '../ima/index.js';
import type { PolicyJudge } from './judge.js';

/** Which list a stream holds, and how many of its first records to skip before judging. */
export interface JudgeListOptions extends ListStreamOptions {
  /** Records at the head of the list that are read but not judged (default 0). */
  readonly skip?: number;
}

/**
 * Streams a list into `judge` and returns the number of records read (judged and skipped).
 * Parser errors (`IMA_TRUNCATED`, `IMA_BAD_LENGTH`, ...) end the list there, as in `replayList`.
 */
export async function judgeList(chunks: AsyncIterable<Uint8Array>, judge: PolicyJudge, opts: JudgeListOptions = {}): Promise<number> {
  const skip = opts.skip ?? 0;
  let seen = 0;
  const visit = (rec: ImaRecord): void => {
    if (seen++ >= skip) judge.judge(rec);
  };
  if ((opts.format ?? 'binary') === 'binary' && (opts.bank ?? 'sha1') === 'sha1') {
    const parser = new BinaryListParser({ endian: opts.endian ?? 'le' });
    for await (const chunk of chunks) parser.pushEach(chunk, visit);
    parser.end();
    return seen;
  }
  for await (const batch of recordBatches(chunks, opts)) for (const rec of batch) visit(rec);
  return seen;
}
