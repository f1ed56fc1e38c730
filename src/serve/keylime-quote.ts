/**
 * The quote behind a Keylime quote answer, with the PCR values it attests. A Keylime verifier
 * hashes the PCR blob's values against the quote's pcrDigest, so they must be the values the TPM
 * quoted. PCR 10 moves all the time on a busy device, so its quoted value is found the way the
 * collector finds a checkpoint's (`replayUntilFits` towards the quote): the stored replay state at
 * the last checkpoint, then the log after it (store, then kernel tail), until the values hash to
 * the pcrDigest; a PCR_Read after the quote (`Tpm.quote`) would fail with `TPM_PCRS_UNSTABLE`
 * there. The other PCRs of the selection have no log here but do not move (boot PCRs, Keylime's
 * data PCR 16), so they are read right after the quote. When nothing fits (PCR 10 extended outside
 * IMA, no kernel tail, a PCR that did move): quote, then read, until they agree.
 */
import { replayUntilFits, type BankName, type ImaRecord } from '../ima/index.js';
import { replayAt, type ImaStore } from '../store/index.js';
import { quoteTarget, type PcrBinder, type PcrRef, type PcrValue, type QuoteSource, type QuoteWithPcrs } from '../tpm/index.js';
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
  /**
   * Data bound in a PCR before the quote (Keylime's PCR 16: reset, then extended once with these
   * digests, one per bank), by `binder`; the PCR must be in `pcrs`.
   */
  readonly bind?: { readonly binder: PcrBinder; readonly pcr: number; readonly digests: Partial<Record<BankName, Uint8Array>> };
}

const refKey = (ref: PcrRef): string => `${ref.bank}:${ref.pcr}`;

/**
 * A fresh quote of `request.pcrs` in `request.bank` with the values it attests: PCR 10 by replay of
 * the log when the boot replays that bank, the other PCRs read after the quote; quote-then-read of
 * the whole selection when that does not fit.
 */
export async function keylimeQuote(source: LogSource & { readonly store: ImaStore }, quotes: QuoteSource, request: KeylimeQuoteRequest): Promise<QuoteWithPcrs> {
  const { nonce, bank, pcrs, boot, bind } = request;
  if (bind !== undefined) await bind.binder.resetAndExtend(bind.pcr, bind.digests);
  const refs = pcrs.map((pcr) => ({ bank, pcr }));
  const banks = bootBanks(await source.store.bootRecord(boot));
  if (pcrs.includes(IMA_PCR) && banks[bank] !== undefined) {
    const signed = await quotes.quote(nonce, refs);
    const still = refs.filter((ref) => ref.pcr !== IMA_PCR);
    const read = new Map((still.length === 0 ? [] : await quotes.readPcrs(still)).map((v) => [refKey(v), v.value]));
    // Every record the quote covers was logged before it (the kernel logs, then extends).
    const until = await logCount(source, boot);
    const from = (await source.store.lastCheckpoint(boot))?.count ?? 0;
    const replay = await replayAt(source.store, boot, from, banks);
    const target = quoteTarget(signed);
    // The quote's values in its order: PCR 10 as replayed so far, the others as read.
    const withRead = (replayed: readonly PcrValue[]): PcrValue[] =>
      target.pcrs.map((ref) => ({ ...ref, value: read.get(refKey(ref)) ?? replayed.find((v) => refKey(v) === refKey(ref))?.value ?? new Uint8Array(0) }));
    const imaRefs = target.pcrs.filter((ref) => ref.pcr === IMA_PCR);
    const replayed = await replayUntilFits({ pcrs: imaRefs, fits: (values) => target.fits(withRead(values)) }, replay, recordsOf(logBatches(source, boot, from, until)));
    if (replayed !== undefined) return { ...signed, pcrs: withRead(replayed) };
  }
  return quotes.quoteAndRead(nonce, refs);
}
