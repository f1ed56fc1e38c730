/**
 * What a Keylime verifier does with an agent's quote answer, written from Keylime's code for the
 * tests: the envelope (rust-keylime `JsonWrapper`), the quote string split as keylime
 * `tpm/tpm_main.py` `_get_quote_parameters` splits it, the signature and nonce checked, and the
 * data PCR's expected value computed as `sim_extend` computes it: H(0…0 ‖ H(pubkey as UTF-8)).
 */
import assert from 'node:assert/strict';
import { createHash, type KeyObject } from 'node:crypto';
import { toHex, type AsciiListParser, type BankName, type PcrReplay } from '../../src/ima/index.js';
import { decodePcrBlob, verifyQuote, type PcrValue, type QuoteAttest } from '../../src/tpm/index.js';
import { json, type Reply } from './_http.js';

/** The `results` of a 200 answer, after checking the agent's envelope. */
export function keylimeResults(reply: Reply): Record<string, unknown> {
  assert.equal(reply.status, 200, reply.body.toString().slice(0, 300));
  const body = json(reply);
  assert.ok(typeof body === 'object' && body !== null && 'results' in body && 'code' in body && 'status' in body);
  assert.equal(body.code, 200);
  assert.equal(body.status, 'Success');
  assert.ok(typeof body.results === 'object' && body.results !== null);
  return body.results as Record<string, unknown>;
}

/** A string field of `results`. */
export function text(results: Record<string, unknown>, name: string): string {
  const value = results[name];
  assert.equal(typeof value, 'string', `${name} is a string`);
  return value as string;
}

/** The quote of a `quote` field checked against `ak` and `nonce`; its PCR values in quote order. */
export function verifiedQuote(quote: string, nonce: string, ak: KeyObject): { pcrs: readonly PcrValue[]; attest: QuoteAttest } {
  assert.ok(quote.startsWith('r'), 'quote string starts with r');
  const parts = quote.slice(1).split(':');
  assert.equal(parts.length, 3);
  const [attest, signature, blob] = parts.map((p) => new Uint8Array(Buffer.from(p, 'base64')));
  assert.ok(attest !== undefined && signature !== undefined && blob !== undefined);
  const pcrs = decodePcrBlob(blob).values;
  return { pcrs, attest: verifyQuote({ attest, signature, akPublic: ak, nonce: new TextEncoder().encode(nonce), pcrs }) };
}

const hash = (bank: BankName, ...parts: Uint8Array[]): Buffer => {
  const h = createHash(bank);
  for (const part of parts) h.update(part);
  return h.digest();
};

/** What the verifier expects in PCR 16 of `bank` for `pubkey` (keylime `Tpm.sim_extend`), hex. */
export function expectedDataPcr(pubkey: string, bank: BankName): string {
  const start = new Uint8Array(hash(bank).length);
  return hash(bank, start, hash(bank, Buffer.from(pubkey, 'utf8'))).toString('hex');
}

/**
 * One round of a verifier's incremental pull in Keylime mode: PCRs 10 and 16 quoted, PCR 16 bound
 * to `pubkey`, and the round's new lines, replayed from the running state, ending exactly at the
 * quoted PCR 10. Returns the lines.
 */
export function checkIncrementalRound(
  results: Record<string, unknown>,
  round: { readonly nonce: string; readonly ak: KeyObject; readonly pubkey: string; readonly index: number },
  replay: PcrReplay,
  parser: AsciiListParser,
): string {
  const { pcrs } = verifiedQuote(text(results, 'quote'), round.nonce, round.ak);
  assert.deepEqual(pcrs.map((p) => p.pcr), [10, 16]);
  assert.equal(toHex(pcrs[1]?.value ?? new Uint8Array(0)), expectedDataPcr(round.pubkey, 'sha256'));
  const list = text(results, 'ima_measurement_list');
  for (const rec of parser.push(new TextEncoder().encode(list))) replay.extend(rec);
  assert.equal(toHex(replay.value('sha256', 10)), toHex(pcrs[0]?.value ?? new Uint8Array(0)), `round ${round.index}`);
  return list;
}
