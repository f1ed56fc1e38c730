/**
 * Offline check of a plain measurement list against one quote (a Keylime-format response saved
 * from `GET /v1/quote`): the quote verifies with the AK, and the list, replayed from PCR zero,
 * reaches the quoted PCR 10 values (records after the match are normal: the kernel logs before it
 * extends, docs/ima-formats.md#pcr-replay). Streams the list: memory is one batch.
 */
import type { KeyObject } from 'node:crypto';
import { BANKS, ImaError, PcrReplay, toHex, type BankName, type ImaRecord } from '../ima/index.js';
import { parseQuoteAttest, QuoteVerifyError, verifyQuote, type PcrValue } from '../tpm/index.js';
import { VerifyError } from './errors.js';

/** A quote as the log is checked against it. */
export interface LogQuote {
  readonly attest: Uint8Array;
  readonly signature: Uint8Array;
  /** The quoted PCR values (from the PCR blob). */
  readonly pcrs: readonly PcrValue[];
  readonly ak: KeyObject;
  /** The nonce the verifier sent; null to accept the quote's own (no freshness claim then). */
  readonly nonce: Uint8Array | null;
}

/** What the list and the quote showed. */
export interface LogReport {
  /** Records 0..matchedAt-1 replay to the quoted PCR 10. */
  readonly matchedAt: number;
  /** Records in the list (those past `matchedAt` were logged after the quote). */
  readonly records: number;
  /** The quoted banks. */
  readonly banks: readonly BankName[];
}

/** The IMA PCR. */
const IMA_PCR = 10;

/** Verifies the quote, then replays `batches` until the quoted PCR 10 matches. */
export async function verifyLogAgainstQuote(batches: AsyncIterable<readonly ImaRecord[]>, quote: LogQuote): Promise<LogReport> {
  try {
    verifyQuote({ attest: quote.attest, signature: quote.signature, akPublic: quote.ak, nonce: quote.nonce ?? extraData(quote.attest), pcrs: quote.pcrs });
  } catch (e) {
    if (!(e instanceof QuoteVerifyError)) throw e;
    throw new VerifyError('VERIFY_SIGNATURE', `the quote does not verify: ${e.message}`, { check: 'quote', causeCode: e.code }, { cause: e });
  }
  const expected: Partial<Record<BankName, Uint8Array>> = {};
  for (const p of quote.pcrs) if (p.pcr === IMA_PCR) expected[p.bank] = p.value;
  const banks = BANKS.filter((b) => expected[b] !== undefined);
  if (banks.length === 0) throw new VerifyError('VERIFY_REPLAY', `the quote does not cover PCR ${IMA_PCR}`, { check: 'log-replay' });
  const replay = new PcrReplay({ banks: Object.fromEntries(banks.map((b) => [b, 'native'])) });
  let matchedAt = replay.matches(expected, IMA_PCR) ? 0 : -1;
  for await (const batch of batches) {
    for (const record of batch) {
      try {
        replay.extend(record);
      } catch (e) {
        if (!(e instanceof ImaError)) throw e;
        throw new VerifyError('VERIFY_REPLAY', `record ${replay.recordCount}: ${e.message}`, { check: 'record-digest', index: replay.recordCount, causeCode: e.code }, { cause: e });
      }
      if (matchedAt < 0 && record.pcr === IMA_PCR && replay.matches(expected, IMA_PCR)) matchedAt = replay.recordCount;
    }
  }
  if (matchedAt < 0) {
    const bank = banks[0] ?? 'sha256';
    throw new VerifyError('VERIFY_REPLAY', `the list (${replay.recordCount} records) never replays to the quoted PCR ${IMA_PCR}`, {
      check: 'log-replay',
      index: replay.recordCount,
      expected: toHex(expected[bank] ?? new Uint8Array(0)),
      got: toHex(replay.value(bank, IMA_PCR)),
    });
  }
  return { matchedAt, records: replay.recordCount, banks };
}

/** The quote's own qualifying data; empty if the attest does not parse (verifyQuote then says why). */
function extraData(attest: Uint8Array): Uint8Array {
  try {
    return parseQuoteAttest(attest).extraData;
  } catch {
    return new Uint8Array(0);
  }
}
