/**
 * Which PCR values a quote attests, found by replaying the event log rather than by reading the
 * PCRs: a quote carries only H(selected values) (TPM 2.0 Part 1 §18.4.1, pcrDigest), and a
 * PCR_Read after it fails on a device whose PCR 10 moves constantly (IMA extends between the two
 * commands; measured on the emulator: `Tpm.quote` gave up after 5 rounds). The kernel logs a
 * record before it extends, so the quoted state is the replay of some prefix of the log:
 * docs/ima-formats.md#pcr-replay, "replay the event log until the quote matches". Pure: the caller brings the
 * replay (positioned at a point the TPM had passed, e.g. a checkpoint) and the records after it.
 */
import type { BankName, ImaRecord } from '../ima/record.js';
import { refsOf, type PcrSelection, type PcrValue } from './structures.js';
import { computePcrDigest, equalBytes } from './verify.js';

/** What of a quote the search needs: its selection and digest, and the digest's hash algorithm. */
export interface QuotedDigest {
  readonly parsed: { readonly pcrSelections: readonly PcrSelection[]; readonly pcrDigest: Uint8Array };
  /** Hash algorithm of the signature scheme: the pcrDigest's (TPM 2.0 Part 3 §18.4.1). */
  readonly digestAlg: number;
}

/** A PCR replay as the search drives it (`PcrReplay` of src/ima). */
export interface ReplayingPcrs {
  extend(record: ImaRecord): void;
  value(bank: BankName, pcr: number): Uint8Array;
}

/** The values of the quote's selected PCRs as `replay` holds them, in selection order. */
export function replayedValues(quote: QuotedDigest, replay: ReplayingPcrs): PcrValue[] {
  return refsOf(quote.parsed.pcrSelections).map(({ bank, pcr }) => ({ bank, pcr, value: replay.value(bank, pcr) }));
}

/** True if `values` are the PCR values the quote attests (their hash is its pcrDigest). */
export function quoteFits(quote: QuotedDigest, values: readonly PcrValue[]): boolean {
  const digest = computePcrDigest(quote.parsed.pcrSelections, values, quote.digestAlg);
  return digest !== undefined && equalBytes(digest, quote.parsed.pcrDigest);
}

/**
 * Extends `replay` with `records` until the replayed values of the quote's selection hash to its
 * pcrDigest, and returns those values (selection order), or undefined when the records run out
 * first. Checks before the first record and after each record of a selected PCR, so `replay` is
 * left at the shortest prefix that fits (records after it are normal: the kernel logs first).
 */
export async function replayToQuote(
  quote: QuotedDigest,
  replay: ReplayingPcrs,
  records: AsyncIterable<ImaRecord> | Iterable<ImaRecord>,
): Promise<PcrValue[] | undefined> {
  const quoted = new Set(refsOf(quote.parsed.pcrSelections).map((r) => r.pcr));
  const fitting = (): PcrValue[] | undefined => {
    const values = replayedValues(quote, replay);
    return quoteFits(quote, values) ? values : undefined;
  };
  const first = fitting();
  if (first !== undefined) return first;
  for await (const record of records) {
    replay.extend(record);
    if (!quoted.has(record.pcr)) continue;
    const values = fitting();
    if (values !== undefined) return values;
  }
  return undefined;
}
