/**
 * The daemon's wiring (`imakeep run`): the collector and the HTTP API quote through one
 * `TpmQuoter` while IMA keeps logging and extending. Verifier quotes taken during appends and
 * collector cycles verify with the PCR blob the API returns, and the log returned with each
 * replays to exactly the blob's PCR 10 (the blob holds the quoted values, found by replay).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { join } from 'node:path';
import { AsciiListParser, PcrReplay, replayUntilMatch } from '../../src/ima/index.js';
import type { Collector } from '../../src/collector/index.js';
import { startApiServer, type ApiServer } from '../../src/serve/index.js';
import { TpmQuoter, decodePcrBlob, verifyQuote } from '../../src/tpm/index.js';
import { get, json } from '../serve/_http.js';
import { collectorTail } from '../../src/testing/index.js';
import { startRig, type Rig } from './_rig.js';

describe('daemon: collector and API share the TPM', () => {
  let rig: Rig;
  let collector: Collector;
  let server: ApiServer;
  let socket: string;

  before(async () => {
    rig = await startRig();
    const quoter = new TpmQuoter(rig.tpm);
    collector = await rig.collector({ flavor: 'n' }, quoter);
    socket = join(rig.work, 'api.sock');
    server = await startApiServer({ store: rig.store, tail: collectorTail(collector), quotes: quoter }, { socket });
  });

  after(async () => {
    await server?.close();
    await collector?.close();
    await rig?.stop();
  });

  it('quotes during appends and cycles: every blob verifies against its quote and the log replays to it', async () => {
    await rig.append(200);
    await collector.runOnce();
    let appending = true;
    const appends = (async () => {
      while (appending) {
        await rig.append(20);
        await collector.runOnce();
      }
    })();
    try {
      for (let round = 0; round < 6; round++) {
        const nonce = `daemon${round}`;
        const reply = await get({ socket }, `/v1/quote?nonce=${nonce}&mask=0x400`);
        assert.equal(reply.status, 200, reply.body.toString().slice(0, 300));
        const body = json(reply);
        assert.ok(typeof body === 'object' && body !== null && 'results' in body);
        const r = body.results as { quote: string; pubkey: string; hash_alg: string; ima_measurement_list: string };
        const [attest, signature, blob] = r.quote.slice(1).split(':').map((p) => new Uint8Array(Buffer.from(p, 'base64')));
        assert.ok(attest !== undefined && signature !== undefined && blob !== undefined);
        const pcrs = decodePcrBlob(blob).values;
        verifyQuote({ attest, signature, akPublic: createPublicKey(r.pubkey), nonce: new TextEncoder().encode(nonce), pcrs });
        const [pcr10] = pcrs;
        assert.ok(pcr10 !== undefined && pcr10.pcr === 10 && pcr10.bank === r.hash_alg);
        const records = new AsciiListParser({ bank: 'sha1' }).push(new TextEncoder().encode(r.ima_measurement_list));
        const at = replayUntilMatch(records, { [pcr10.bank]: pcr10.value }, { replay: new PcrReplay({ banks: { [pcr10.bank]: 'native' }, verifyDigests: false }) });
        assert.ok(at !== null && at >= 200, `round ${round}: the log replays to the quoted PCR 10 (at ${at})`);
      }
    } finally {
      appending = false;
      await appends;
    }
    assert.ok(collector.removed >= 200, `removed ${collector.removed}`);
  });
});
