/**
 * `/v1/quote` on a device whose PCR 10 moves all the time: the PCR blob must hold the values the
 * TPM quoted (a Keylime verifier hashes them against the quote's pcrDigest), found by replaying the
 * log as the collector does, not by a PCR_Read that IMA has already moved past.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AsciiListParser, PcrReplay, replayUntilMatch, toHex } from '../../src/ima/index.js';
import { TpmQuoter, decodePcrBlob, verifyQuote, type PcrValue, type QuoteSource } from '../../src/tpm/index.js';
import { startApiServer, type ApiServer } from '../../src/serve/index.js';
import { SimulatedDevice } from './_device.js';
import { get, json, type Target } from './_http.js';

/** The quote's PCR values after checking the signature, nonce and blob against the quote. */
function verifiedReply(body: unknown, nonce: string): { pcrs: readonly PcrValue[]; list: string } {
  assert.ok(typeof body === 'object' && body !== null && 'results' in body);
  const r = body.results as { quote: string; pubkey: string; ima_measurement_list: string };
  const [attest, signature, blob] = r.quote.slice(1).split(':').map((p) => new Uint8Array(Buffer.from(p, 'base64')));
  assert.ok(attest !== undefined && signature !== undefined && blob !== undefined);
  const pcrs = decodePcrBlob(blob).values;
  verifyQuote({ attest, signature, akPublic: createPublicKey(r.pubkey), nonce: new TextEncoder().encode(nonce), pcrs });
  return { pcrs, list: r.ima_measurement_list };
}

/** Record count at which the ASCII list's replay reaches `pcr10` (sha256), or null. */
function replayedTo(list: string, pcr10: Uint8Array): number | null {
  const records = new AsciiListParser({ bank: 'sha1' }).push(new TextEncoder().encode(list));
  return replayUntilMatch(records, { sha256: pcr10 }, { replay: new PcrReplay({ banks: { sha256: 'native' }, verifyDigests: false }) });
}

describe('Keylime quote while IMA keeps extending PCR 10', () => {
  let device: SimulatedDevice;
  let work: string;
  let target: Target;
  let server: ApiServer;
  let reads = 0;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'imakeep-moving-'));
    device = await SimulatedDevice.start({ chunkRecords: 16 });
    await device.cycle(40);
    await device.measure(7);
    const tpm = new TpmQuoter(device.tpm);
    // IMA extends right after every quote: a PCR_Read would see values the quote does not hold.
    const moving: QuoteSource = {
      activeBanks: () => tpm.activeBanks(),
      readPcrs: (pcrs) => tpm.readPcrs(pcrs),
      async quote(nonce, pcrs) {
        const quote = await tpm.quote(nonce, pcrs);
        await device.measure(3);
        return quote;
      },
      async quoteAndRead(nonce, pcrs) {
        reads++;
        return tpm.quoteAndRead(nonce, pcrs);
      },
    };
    target = { socket: join(work, 'api.sock') };
    server = await startApiServer({ store: device.store, tail: device.tail({ batch: 5 }), quotes: moving }, target);
  });

  after(async () => {
    await server?.close();
    await device?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('PCR 10: the blob holds the quoted values (found by replay), and the log replays to them', async () => {
    for (let round = 0; round < 3; round++) {
      const before = device.records().length;
      const nonce = `moving${round}`;
      const reply = await get(target, `/v1/quote?nonce=${nonce}&mask=0x400&ima_ml_entry=0`);
      assert.equal(reply.status, 200, reply.body.toString().slice(0, 300));
      const { pcrs, list } = verifiedReply(json(reply), nonce);
      const [pcr10] = pcrs;
      assert.ok(pcr10 !== undefined && pcr10.bank === 'sha256' && pcr10.pcr === 10);
      // The quote covers exactly the records measured before it, and the TPM has moved on since.
      assert.equal(replayedTo(list, pcr10.value), before);
      const [now] = await device.tpm.pcrRead([{ bank: 'sha256', pcr: 10 }]);
      assert.notEqual(toHex(now?.value ?? new Uint8Array(0)), toHex(pcr10.value));
    }
    assert.equal(reads, 0);
  });

  it('other PCRs in the mask: quote, then read (no log replays PCR 0)', async () => {
    const reply = await get(target, '/v1/quote?nonce=mixed&mask=0x401');
    assert.equal(reply.status, 200, reply.body.toString().slice(0, 300));
    const { pcrs } = verifiedReply(json(reply), 'mixed');
    assert.deepEqual(pcrs.map((p) => p.pcr), [0, 10]);
    assert.equal(reads, 1);
  });

  it('GET /v1/status: one summary per boot, as `imakeep status` shows it from the store', async () => {
    const body = json(await get(target, '/v1/status'));
    assert.ok(typeof body === 'object' && body !== null && 'boots' in body && Array.isArray(body.boots));
    const record = await device.store.bootRecord(0);
    assert.deepEqual(body.boots, [
      { boot: 0, kernelBootId: record.kernelBootId, firstSeen: record.firstSeen, stored: 40, checkpointed: 40, removed: 40, pendingRemoval: null, exported: 0 },
    ]);
  });
});
