/**
 * The Keylime agent's answers, field for field (docs/api.md#keylime-quote; rust-keylime
 * `keylime-agent/src/quotes_handler.rs` `integrity`, `keylime/src/quote.rs` `KeylimeQuote`,
 * `keylime-agent/src/keys_handler.rs` `pubkey`, `keylime-agent/src/version_handler.rs`), so an
 * unmodified Keylime verifier can pull quotes and incremental logs from imakeep. The only
 * difference from the agent is the meaning of `ima_ml_entry`: a GLOBAL index (Invariant 6), so the
 * lines a verifier gets are the lines an untrimmed list would have given, whatever was removed
 * from the kernel.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import type { BankName } from '../ima/index.js';
import {
  encodePcrBlob,
  parseSignature,
  parseTpm2bPublic,
  publicKeyFromTpm2b,
  type PcrBinder,
  type QuoteSource,
  type QuoteWithPcrs,
} from '../tpm/index.js';
import { ServeError } from './errors.js';

/**
 * The PCR Keylime binds the agent's payload key in (keylime `config.TPM_DATA_PCR`): the verifier
 * requires it in every quote, equal to H(0…0 ‖ H(pubkey as UTF-8 text)) in the quote's bank
 * (keylime `tpm/tpm_main.py`, `check_pcrs` and `sim_extend`).
 */
export const KEYLIME_DATA_PCR = 16;

/** The API version `GET /version` names (rust-keylime `API_VERSION`, the pull agent's). */
export const KEYLIME_API_VERSION = '2.2';

/** What Keylime mode adds to the API. */
export interface KeylimeOptions {
  /**
   * The agent's payload key: RSA (a tenant payload is encrypted to it with keylime
   * `crypto.rsa_import_pubkey`, which refuses other keys). Its SPKI PEM is the answers' `pubkey`.
   */
  readonly payloadKey: KeyObject;
  /**
   * What the Keylime routes quote with and bind PCR 16 through: in the daemon the one `TpmQuoter`
   * (RSA AK in Keylime mode, as the verifier's default `accept_tpm_signing_algs` require).
   */
  readonly quotes: QuoteSource & PcrBinder;
}

/** The payload key's `pubkey` text (SPKI PEM); throws `SERVE_BAD_PAYLOAD_KEY` for a key that is not RSA. */
export function payloadPublicPem(key: KeyObject): string {
  if (key.asymmetricKeyType !== 'rsa') {
    throw new ServeError('SERVE_BAD_PAYLOAD_KEY', `the Keylime payload key must be RSA, not ${key.asymmetricKeyType ?? key.type}`);
  }
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return String(pub.export({ type: 'spki', format: 'pem' }));
}

/**
 * The digests that bind `pubkey` in the data PCR, one per bank: after a reset and one extend with
 * them, the PCR holds H(0…0 ‖ H(pubkey)) in each of `banks`, as the verifier recomputes it.
 */
export function keylimeBindingDigests(pubkey: string, banks: readonly BankName[]): Partial<Record<BankName, Uint8Array>> {
  const text = new TextEncoder().encode(pubkey);
  return Object.fromEntries(banks.map((bank) => [bank, new Uint8Array(createHash(bank).update(text).digest())]));
}

/** Longest nonce the agent accepts: alphanumeric, at most 64 characters (rust-keylime quotes_handler.rs). */
export const MAX_KEYLIME_NONCE = 64;

/** The nonce as the agent takes it: its ASCII bytes, used as the quote's qualifying data. */
export function parseKeylimeNonce(text: string | null): Uint8Array {
  if (text === null || !/^[A-Za-z0-9]{1,64}$/.test(text)) {
    throw new ServeError('SERVE_BAD_PARAMETER', `nonce must be 1 to ${MAX_KEYLIME_NONCE} alphanumeric characters`, { parameter: 'nonce' });
  }
  return new TextEncoder().encode(text);
}

/**
 * PCRs named by the agent's `mask`: a hex bitmap, bit n = PCR n (`0x400` = PCR 10), 24 PCRs at
 * most (a PC client TPM's). Default PCR 10, the IMA PCR.
 */
export function parseKeylimeMask(text: string | null): number[] {
  if (text === null) return [10];
  const m = /^(?:0x)?([0-9a-fA-F]{1,6})$/.exec(text);
  const bits = m?.[1] === undefined ? 0 : parseInt(m[1], 16);
  if (bits === 0) throw new ServeError('SERVE_BAD_PARAMETER', `mask '${text.slice(0, 16)}' is not a non-zero hex bitmap of PCRs 0-23`, { parameter: 'mask' });
  return Array.from({ length: 24 }, (_, pcr) => pcr).filter((pcr) => (bits >> pcr) & 1);
}

/** `r<b64 TPMS_ATTEST>:<b64 TPMT_SIGNATURE>:<b64 PCR blob>` (rust-keylime `encode_quote_string`). */
export function keylimeQuoteString(quote: QuoteWithPcrs): string {
  const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
  return `r${b64(quote.attest)}:${b64(quote.signature)}:${b64(encodePcrBlob(quote.pcrs))}`;
}

/**
 * The fields of a Keylime quote answer other than the log, in the agent's order: `pubkey` only when
 * given (the agent leaves it out for `partial=1`), then `boottime` (seconds), which the verifier
 * reads to tell a reboot (keylime `cloud_verifier_common.process_quote_response`).
 */
export function keylimeQuoteFields(quote: QuoteWithPcrs, bank: BankName, pubkey: string | undefined, bootTimeSeconds: number): Record<string, string | number> {
  const ak = parseTpm2bPublic(quote.akPublic);
  const signature = parseSignature(quote.signature);
  return {
    quote: keylimeQuoteString(quote),
    hash_alg: bank,
    enc_alg: ak.type,
    sign_alg: signature.sigAlg,
    ...(pubkey === undefined ? {} : { pubkey }),
    boottime: bootTimeSeconds,
  };
}

/** The AK as PEM: the `pubkey` of imakeep's own `/v1/quote`, which a verifier without Keylime's registrar checks the quote with. */
export function akPublicPem(quote: QuoteWithPcrs): string {
  return String(publicKeyFromTpm2b(quote.akPublic).export({ type: 'spki', format: 'pem' }));
}

/** The agent's answer envelope (rust-keylime `JsonWrapper::success`). */
export function keylimeSuccess(results: Readonly<Record<string, unknown>>): { code: 200; status: 'Success'; results: Readonly<Record<string, unknown>> } {
  return { code: 200, status: 'Success', results };
}

/**
 * The response body as it streams: `{"code":200,"status":"Success","results":{…,
 * "ima_measurement_list":"<lines>","ima_measurement_list_entry":N}}`. The log goes last so that it
 * streams (JSON key order carries no meaning; the verifier reads a dict). The lines are the
 * kernel's bytes decoded as UTF-8, as the agent's `read_to_string` does.
 */
export async function* keylimeQuoteBody(
  fields: Readonly<Record<string, string | number>>,
  lines: AsyncIterable<Uint8Array>,
  entry: number,
): AsyncGenerator<string> {
  const head = JSON.stringify(keylimeSuccess(fields));
  yield `${head.slice(0, -2)},"ima_measurement_list":"`;
  const decoder = new TextDecoder('utf-8');
  for await (const chunk of lines) yield JSON.stringify(decoder.decode(chunk, { stream: true })).slice(1, -1);
  yield `${JSON.stringify(decoder.decode()).slice(1, -1)}","ima_measurement_list_entry":${entry}}}`;
}
