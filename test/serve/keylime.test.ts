/**
 * A Keylime verifier pulls quotes and incremental logs from a device in Keylime mode with
 * `ima_ml_entry` = the next global index, across many removals from the kernel: it gets exactly the
 * lines an untrimmed list would have given, every quote verifies with the AK a registrar holds
 * (signature, nonce, PCR blob), PCR 16 holds the payload key's binding, and the lines replay to the
 * quoted PCR 10 as Keylime's verifier replays them (ASCII lines re-parsed, bank = hash_alg).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { AsciiListParser, PcrReplay, formatAsciiLineBytes } from '../../src/ima/index.js';
import { publicKeyFromTpm2b, TpmQuoter } from '../../src/tpm/index.js';
import { startApiServer } from '../../src/serve/index.js';
import type { CollectedDevice } from './_collected.js';
import { errorCode, get, json, type Target } from './_http.js';
import { checkIncrementalRound, keylimeResults, text } from './_keylime.js';
import { ServedDevice } from './_served.js';

describe('Keylime pull over imakeep', () => {
  let served: ServedDevice;
  let device: CollectedDevice;
  let target: Target;
  let ak: KeyObject;
  const payloadKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

  before(async () => {
    served = await ServedDevice.start('keylime', { chunkRecords: 32, readWindowRecords: 25 });
    device = served.device;
    const quotes = new TpmQuoter(device.tpm, { alg: 'rsa' });
    ({ target } = await served.serve({ tail: device.tail(), quotes, keylime: { payloadKey, quotes } }));
    const rsaAk = await device.tpm.createAk({ alg: 'rsa' });
    await device.tpm.flush(rsaAk.handle);
    ak = publicKeyFromTpm2b(rsaAk.public);
  });

  after(async () => {
    await served?.close();
  });

  it('incremental pulls across 8 removal cycles give exactly the untrimmed list, and every quote verifies and replays', async () => {
    // Keylime's verifier state (`keylime/agentstates.py`): next entry and the running PCR of the quoted bank.
    let next = 0;
    const received: string[] = [];
    const replay = new PcrReplay({ banks: { sha256: 'native' }, verifyDigests: false });
    const parser = new AsciiListParser({ bank: 'sha1' });
    let payloadPem = '';
    for (let round = 0; round < 8; round++) {
      await device.cycle(41 + 13 * round);
      await device.measure(9); // in the kernel only, not yet quoted by a checkpoint
      const nonce = `n${round}x${next}`;
      // The verifier asks for the key once (partial=0), then uses the one it cached (partial=1).
      const r = keylimeResults(await get(target, `/v2.2/quotes/integrity?nonce=${nonce}&mask=0x400&partial=${round === 0 ? 0 : 1}&ima_ml_entry=${next}`));
      assert.equal(r.ima_measurement_list_entry, next);
      assert.equal(r.hash_alg, 'sha256');
      assert.equal(r.enc_alg, 'rsa');
      assert.equal(r.sign_alg, 'rsassa');
      assert.equal(r.boottime, Math.floor((await device.store.bootRecord(device.boot)).firstSeen / 1000));
      const pubkey = round === 0 ? text(r, 'pubkey') : payloadPem;
      payloadPem = pubkey;
      // Replay the new lines from the running state; they must end exactly at the quoted PCR 10.
      const list = checkIncrementalRound(r, { nonce, ak, pubkey, index: round }, replay, parser);
      received.push(list);
      next += list.split('\n').length - 1;
      assert.ok(device.removed > 0);
    }
    const untrimmed = Buffer.concat(device.records().map((rec) => formatAsciiLineBytes(rec, { bank: 'sha1' }))).toString('utf8');
    assert.equal(received.join(''), untrimmed);
    assert.equal(next, device.records().length);
    assert.ok(device.removed > 300, `removed ${device.removed}`);
  });

  it('entry == count gives an empty list; entry past the count gives the whole list from 0 (agent semantics)', async () => {
    const count = device.records().length;
    for (const path of ['/v1/quote?', '/v2.2/quotes/integrity?mask=0x400&partial=1&']) {
      const atEnd = keylimeResults(await get(target, `${path}nonce=abc&ima_ml_entry=${count}`));
      assert.equal(atEnd.ima_measurement_list, '');
      assert.equal(atEnd.ima_measurement_list_entry, count);
      const past = keylimeResults(await get(target, `${path}nonce=abc&ima_ml_entry=${count + 5}`));
      assert.equal(past.ima_measurement_list_entry, 0);
      assert.equal(text(past, 'ima_measurement_list').split('\n').length - 1, count);
    }
  });

  it('bad nonce, mask or entry: 400 with the agent envelope and our error code', async () => {
    for (const query of ['nonce=a-b', `nonce=${'a'.repeat(65)}`, 'mask=0xzz&nonce=a', 'nonce=a&ima_ml_entry=-1', 'nonce=a&ima_ml_entry=1e3', '']) {
      const reply = await get(target, `/v1/quote?${query}`);
      assert.equal(reply.status, 400, query);
      assert.equal(errorCode(reply), 'SERVE_BAD_PARAMETER', query);
      const body = json(reply);
      assert.ok(typeof body === 'object' && body !== null && 'code' in body && body.code === 400);
    }
  });

  it('without a quote source the route answers 503', async () => {
    const bare = await startApiServer({ store: device.store }, { socket: join(served.work, 'bare.sock') });
    try {
      const reply = await get({ socket: join(served.work, 'bare.sock') }, '/v1/quote?nonce=abc');
      assert.equal(reply.status, 503);
      assert.equal(errorCode(reply), 'SERVE_UNAVAILABLE');
    } finally {
      await bare.close();
    }
  });
});
