/**
 * The quote behind a Keylime `/v1/quote` answer, with the PCR values it attests. A Keylime
 * verifier hashes the PCR blob's values against the quote's pcrDigest, so they must be the values
 * the TPM quoted. For PCR 10 in a bank the log replays they are found the way the collector finds
 * a checkpoint's (`replayUntilFits` towards the quote): the stored replay state at the last checkpoint, then the log
 * after it (store, then kernel tail), until the replayed values hash to the pcrDigest. A
 * PCR_Read after the quote (`Tpm.quote`) would fail with `TPM_PCRS_UNSTABLE` on a device whose
 * PCR 10 moves constantly. Other PCRs have no log here: quote, then read, until they agree.
 */
import { replayUntilFits, type BankName, type ImaRecord } from '../ima/index.js';
import { replayAt, type ImaStore } from '../store/index.js';
import { quoteTarget, type QuoteSource, type QuoteWithPcrs } from '../tpm/index.js';
import { bootBanks, logBatches, logCount, type IndexedBatch, type LogSource } from './log-stream.js';

/** The PCR IMA extends (CONFIG_IMA_MEASURE_PCR_IDX, docs/ima-formats.md#binary-record). */
const IMA_PCR = 10;

async function* recordsOf(batches: AsyncIterable<IndexedBatch>): AsyncGenerator<ImaRecord> {
  for await (const batch of batches) yield* batch.records;
}

/** What {@link keylimeQuote} quotes. */
export interface KeylimeQuoteRequest {
  readonly nonce: Uint8Array;
  readonly bank: BankName;
  readonly pcrs: readonly number[];
  /** Store boot number of the log (the current boot). */
  readonly boot: number;
}

/**
 * A fresh quote of `request.pcrs` in `request.bank` with the values it attests: by replay of the
 * log for PCR 10 alone in a bank the boot replays; by quote-then-read otherwise, and when no
 * prefix of the log fits the quote (PCR 10 extended outside IMA, or no kernel tail to read).
 */
export async function keylimeQuote(source: LogSource & { readonly store: ImaStore }, quotes: QuoteSource, request: KeylimeQuoteRequest): Promise<QuoteWithPcrs> {
  const { nonce, bank, pcrs, boot } = request;
  const refs = pcrs.map((pcr) => ({ bank, pcr }));
  const banks = bootBanks(await source.store.bootRecord(boot));
  if (pcrs.length === 1 && pcrs[0] === IMA_PCR && banks[bank] !== undefined) {
    const signed = await quotes.quote(nonce, refs);
    // Every record the quote covers was logged before it (the kernel logs, then extends).
    const until = await logCount(source, boot);
    const from = (await source.store.lastCheckpoint(boot))?.count ?? 0;
    const replay = await replayAt(source.store, boot, from, banks);
    const values = await replayUntilFits(quoteTarget(signed), replay, recordsOf(logBatches(source, boot, from, until)));
    if (values !== undefined) return { ...signed, pcrs: values };
  }
  return quotes.quoteAndRead(nonce, refs);
}
