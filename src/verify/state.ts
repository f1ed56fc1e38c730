/**
 * The verifier's state as JSON, so `imakeep verify --json` can print it and `--from-checkpoint`
 * read it back: the next cursor, the PCR values there and the last checkpoint's quote. Bytes are
 * hex, the TPM clock a decimal string (a u64).
 */
import { BANKS, fromHex, toHex, type BankMode } from '../ima/index.js';
import { cursorFromText, formatCursor } from '../store/index.js';
import { parseQuoteAttest } from '../tpm/index.js';
import { VerifyError } from './errors.js';
import type { VerifyState } from './verifier.js';

/** The JSON form of a {@link VerifyState}. */
export interface VerifyStateJson {
  readonly cursor: string;
  readonly recordCount: number;
  readonly banks: readonly { readonly bank: string; readonly mode: string; readonly pcrs: readonly { readonly pcr: number; readonly value: string }[] }[];
  readonly lastChunkHash: string | null;
  readonly lastQuote: { readonly boot: number; readonly attest: string; readonly signature: string } | null;
}

/** The JSON form of a state. */
export function verifyStateToJson(state: VerifyState): VerifyStateJson {
  return {
    cursor: formatCursor(state.cursor),
    recordCount: state.replay.recordCount,
    banks: state.replay.banks.map((b) => ({ bank: b.bank, mode: b.mode, pcrs: b.pcrs.map((p) => ({ pcr: p.pcr, value: toHex(p.value) })) })),
    lastChunkHash: state.lastChunkHash === null ? null : toHex(state.lastChunkHash),
    lastQuote: state.lastQuote === null ? null : { boot: state.lastQuote.boot, attest: toHex(state.lastQuote.attest), signature: toHex(state.lastQuote.signature) },
  };
}

function bad(message: string): VerifyError {
  return new VerifyError('VERIFY_BUNDLE_CORRUPT', `verify state: ${message}`, { check: 'state-decode' });
}

function hexField(value: unknown, name: string): Uint8Array {
  const bytes = typeof value === 'string' ? fromHex(value) : null;
  if (bytes === null) throw bad(`${name} is not hex`);
  return bytes;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads a state from its JSON text; throws `VERIFY_BUNDLE_CORRUPT` (check `state-decode`). */
export function verifyStateFromJson(text: string): VerifyState {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw bad(`not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!isRecord(value) || typeof value.cursor !== 'string' || !Number.isSafeInteger(value.recordCount) || !Array.isArray(value.banks)) {
    throw bad('needs cursor, recordCount and banks');
  }
  const cursor = cursorFromText(value.cursor);
  if (cursor === undefined) throw bad('cursor is not <boot>.<index>.<checkpoint>');
  const banks = value.banks.map((b: unknown, i) => {
    if (!isRecord(b) || !Array.isArray(b.pcrs)) throw bad(`banks[${i}] is malformed`);
    const bank = BANKS.find((name) => name === b.bank);
    const mode = (['native', 'padded'] as const).find((m): m is BankMode => m === b.mode);
    if (bank === undefined || mode === undefined) throw bad(`banks[${i}] has an unknown bank or mode`);
    const pcrs = b.pcrs.map((p: unknown, j) => {
      if (!isRecord(p) || typeof p.pcr !== 'number' || !Number.isInteger(p.pcr)) throw bad(`banks[${i}].pcrs[${j}] is malformed`);
      return { pcr: p.pcr, value: hexField(p.value, `banks[${i}].pcrs[${j}].value`) };
    });
    return { bank, mode, pcrs };
  });
  const q = value.lastQuote;
  let lastQuote: VerifyState['lastQuote'] = null;
  if (q !== null && q !== undefined) {
    if (!isRecord(q) || typeof q.boot !== 'number' || !Number.isInteger(q.boot)) throw bad('lastQuote is malformed');
    const attest = hexField(q.attest, 'lastQuote.attest');
    const signature = hexField(q.signature, 'lastQuote.signature');
    let clock;
    try {
      clock = parseQuoteAttest(attest).clockInfo;
    } catch (e) {
      throw bad(`lastQuote.attest is not a quote (${e instanceof Error ? e.message : String(e)})`);
    }
    lastQuote = { boot: q.boot, attest, signature, clock };
  }
  const hash = value.lastChunkHash;
  return {
    cursor,
    replay: { recordCount: Number(value.recordCount), banks },
    lastChunkHash: hash === null || hash === undefined ? null : hexField(hash, 'lastChunkHash'),
    lastQuote,
  };
}
