/**
 * Example: a verifier that pulls from an imakeep device the way Keylime's verifier pulls from its
 * agent (keylime `keylime/cloud_verifier_common.py`; docs/api.md#keylime-quote): `GET /v1/quote?nonce=&mask=&ima_ml_entry=<next>` with a fresh nonce each
 * round, the quote checked against the enrolled AK, and only the new log lines replayed on top of
 * the PCR state kept from the round before. Because `ima_ml_entry` is a global index, the rounds
 * stay consistent however many records the device removed from its kernel in between.
 *
 *   node dist/examples/keylime-verifier.js --socket /var/lib/imakeep/imakeep.sock --ak ak.pem [--rounds 3]
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { AsciiListParser, PcrReplay, toHex, type BankName } from '../src/ima/index.js';
import { decodePcrBlob, verifyQuote } from '../src/tpm/index.js';
import { trustedAkFromPem } from '../src/verify/index.js';

/** What one round established. */
export interface RoundResult {
  /** Global index of the first line received this round. */
  readonly entry: number;
  /** Lines received this round. */
  readonly lines: number;
  /** Records replayed so far when the quoted PCR 10 matched (Keylime's "quote may lag the log"). */
  readonly matchedAt: number;
  /** The quoted PCR 10 (hex) of the bank used. */
  readonly pcr10: string;
}

/** GET over a unix socket, whole JSON body. */
function getJson(socket: string, path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        try {
          const body: unknown = JSON.parse(Buffer.concat(parts).toString('utf8'));
          if (res.statusCode !== 200) reject(new Error(`HTTP ${String(res.statusCode)}: ${JSON.stringify(body)}`));
          else resolve(body);
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

function field(value: unknown, name: string): unknown {
  if (typeof value !== 'object' || value === null || !(name in value)) throw new Error(`response lacks ${name}`);
  return (value as Record<string, unknown>)[name];
}

/**
 * Keylime's per-agent state (`AgentAttestState`): the next entry to ask for and the running PCR
 * values of the quoted bank, trusted because a verified quote matched them.
 */
export class KeylimeStyleVerifier {
  readonly #socket: string;
  readonly #ak: KeyObject;
  #next = 0;
  #replay: PcrReplay | undefined;
  #parser = new AsciiListParser({ bank: 'sha1' });

  constructor(socket: string, ak: KeyObject) {
    this.#socket = socket;
    this.#ak = ak;
  }

  /** One attestation round; throws on any failure (Keylime would mark the agent failed). */
  async round(): Promise<RoundResult> {
    const nonce = randomBytes(16).toString('hex'); // alphanumeric, as the agent requires
    const body = await getJson(this.#socket, `/v1/quote?nonce=${nonce}&mask=0x400&ima_ml_entry=${this.#next}`);
    const results = field(body, 'results');
    const quote = String(field(results, 'quote'));
    const bank = String(field(results, 'hash_alg')) as BankName;
    const entry = Number(field(results, 'ima_measurement_list_entry'));
    const list = String(field(results, 'ima_measurement_list'));
    if (entry !== this.#next) throw new Error(`asked for entry ${this.#next}, got ${entry} (invalid_ima_entry_nb)`);
    const [attest, signature, blob] = quote.slice(1).split(':').map((p) => new Uint8Array(Buffer.from(p, 'base64')));
    if (attest === undefined || signature === undefined || blob === undefined) throw new Error('malformed quote string');
    const pcrs = decodePcrBlob(blob).values;
    verifyQuote({ attest, signature, akPublic: this.#ak, nonce: new TextEncoder().encode(nonce), pcrs });
    const quoted = pcrs.find((p) => p.bank === bank && p.pcr === 10);
    if (quoted === undefined) throw new Error('the quote does not cover PCR 10');
    this.#replay ??= new PcrReplay({ banks: { [bank]: 'native' } });
    const replay = this.#replay;
    // The quote may lag the log: it must match the running state before or after some new line.
    let matchedAt = replay.matches({ [bank]: quoted.value }, 10) ? replay.recordCount : -1;
    const records = this.#parser.push(new TextEncoder().encode(list));
    for (const record of records) {
      replay.extend(record);
      if (matchedAt < 0 && replay.matches({ [bank]: quoted.value }, 10)) matchedAt = replay.recordCount;
    }
    if (matchedAt < 0) throw new Error(`the log never reaches the quoted PCR 10 ${toHex(quoted.value)} (quote_progress)`);
    this.#next = entry + records.length;
    return { entry, lines: records.length, matchedAt, pcr10: toHex(quoted.value) };
  }

  /** The entry the next round asks for. */
  get next(): number {
    return this.#next;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { socket: { type: 'string' }, ak: { type: 'string' }, rounds: { type: 'string' } } });
  if (values.socket === undefined || values.ak === undefined) throw new Error('usage: keylime-verifier --socket PATH --ak PEM [--rounds N]');
  const verifier = new KeylimeStyleVerifier(values.socket, trustedAkFromPem(readFileSync(values.ak)));
  for (let i = 0; i < Number(values.rounds ?? '1'); i++) {
    const r = await verifier.round();
    process.stdout.write(`round ${i}: entries ${r.entry}..${r.entry + r.lines - 1}, quote matched at ${r.matchedAt}, PCR 10 ${r.pcr10}\n`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
