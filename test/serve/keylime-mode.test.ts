/**
 * Keylime mode against the rules a stock Keylime verifier applies to the agent's answers
 * (keylime `cloud_verifier_common.process_quote_response`, `tpm/tpm_main.py` `check_quote` and
 * `check_pcrs`): PCR 16 in every quote whatever the mask, holding H(0…0 ‖ H(pubkey)) (computed here
 * and compared with `tpm2_pcrread` of the swtpm), re-bound after a TPM reset; the algorithm names
 * the default `accept_tpm_*_algs` accept with an RSA AK; every field's name and JSON type as the
 * agent's `KeylimeQuote`; `partial`; the payload key route; and the errors.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { toHex } from '../../src/ima/index.js';
import { publicKeyFromTpm2b, TpmQuoter } from '../../src/tpm/index.js';
import { openPayloadKey, startApiServer } from '../../src/serve/index.js';
import { errorCode, get, json, type Target } from './_http.js';
import { expectedDataPcr, keylimeResults, text, verifiedQuote } from './_keylime.js';
import { ServedDevice } from './_served.js';
import { KEYLIME_API_VERSION } from '../../src/testing/index.js';

const run = promisify(execFile);

describe('Keylime mode', () => {
  let served: ServedDevice;
  let target: Target;
  let payloadKey: KeyObject;
  let pubkey: string;
  let ak: KeyObject;

  before(async () => {
    served = await ServedDevice.start('keylime-mode', { chunkRecords: 16 });
    const { device } = served;
    await device.cycle(30);
    await device.measure(5);
    payloadKey = openPayloadKey(join(served.work, 'payload.pem'));
    const quotes = new TpmQuoter(device.tpm, { alg: 'rsa' });
    ({ target } = await served.serve({ tail: device.tail(), quotes, keylime: { payloadKey, quotes } }));
    pubkey = text(keylimeResults(await get(target, '/v2.2/keys/pubkey')), 'pubkey');
    // The AK a registrar holds: the deterministic RSA primary the quotes are signed with.
    const rsaAk = await device.tpm.createAk({ alg: 'rsa' });
    await device.tpm.flush(rsaAk.handle);
    ak = publicKeyFromTpm2b(rsaAk.public);
  });

  after(async () => {
    await served?.close();
  });

  /** PCR 16 of `bank` as tpm2_pcrread reads it from the swtpm (our connection closed meanwhile). */
  async function pcrread16(bank: string): Promise<string> {
    const { device } = served;
    await device.tpm.close();
    const out = join(served.work, `pcr16-${bank}.bin`);
    await run('tpm2_pcrread', ['-o', out, `${bank}:16`], { env: { ...process.env, TPM2TOOLS_TCTI: device.swtpm.tcti } });
    return readFileSync(out).toString('hex');
  }

  it('PCR 16 holds H(0…0 ‖ H(pubkey as UTF-8)) in the quoted bank: computed here, read by tpm2_pcrread, and quoted', async () => {
    for (const bank of ['sha256', 'sha1'] as const) {
      const nonce = `bind${bank}`;
      const r = keylimeResults(await get(target, `/v2.2/quotes/integrity?nonce=${nonce}&mask=0x400&partial=0&ima_ml_entry=0&bank=${bank}`));
      assert.equal(text(r, 'pubkey'), pubkey);
      assert.equal(r.hash_alg, bank);
      const { pcrs } = verifiedQuote(text(r, 'quote'), nonce, ak);
      const pcr16 = pcrs.find((p) => p.pcr === 16 && p.bank === bank);
      assert.ok(pcr16 !== undefined, 'PCR 16 quoted');
      const expected = expectedDataPcr(pubkey, bank);
      assert.equal(toHex(pcr16.value), expected);
      assert.equal(await pcrread16(bank), expected);
    }
  });

  it('PCR 16 is in every quote whatever the mask, bound in each of concurrent requests', async () => {
    const masks = [
      ['0x400', [10]],
      ['0x1', [0]],
      ['0x401', [0, 10]],
      ['0x408000', [15, 22]],
      ['0x10000', [16]],
      ['0x10400', [10, 16]],
    ] as const;
    // All at once: each request resets and re-extends PCR 16; none may quote or read it half done.
    await Promise.all(
      masks.map(async ([mask, asked]) => {
        const nonce = `mask${mask.slice(2)}`;
        const r = keylimeResults(await get(target, `/v2.6/quotes/integrity?nonce=${nonce}&mask=${mask}&partial=1`));
        const { pcrs, attest } = verifiedQuote(text(r, 'quote'), nonce, ak);
        const selected = attest.pcrSelections.flatMap((s) => s.pcrs);
        assert.deepEqual(selected, [...new Set([...asked, 16])].sort((a, b) => a - b), mask);
        assert.equal(toHex(pcrs.find((p) => p.pcr === 16)?.value ?? new Uint8Array(0)), expectedDataPcr(pubkey, 'sha256'), mask);
      }),
    );
  });

  it('every field has the agent name and JSON type; RSA AK: sha256, rsa, rsassa (Keylime defaults accept them)', async () => {
    const count = served.device.records().length;
    const r = keylimeResults(await get(target, '/v2.0/quotes/integrity?nonce=types1&mask=0x400&partial=0&ima_ml_entry=3'));
    assert.deepEqual(Object.keys(r).sort(), ['boottime', 'enc_alg', 'hash_alg', 'ima_measurement_list', 'ima_measurement_list_entry', 'pubkey', 'quote', 'sign_alg']);
    assert.equal(r.hash_alg, 'sha256');
    assert.equal(r.enc_alg, 'rsa');
    assert.equal(r.sign_alg, 'rsassa');
    // accept_tpm_hash_algs / encryption / signing defaults (keylime config, verifier section).
    assert.ok(['sha512', 'sha384', 'sha256'].includes(String(r.hash_alg)));
    assert.ok(['ecc', 'rsa'].includes(String(r.enc_alg)));
    assert.ok(['ecschnorr', 'rsassa'].includes(String(r.sign_alg)));
    assert.ok(/^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+-----END PUBLIC KEY-----\n$/.test(text(r, 'pubkey')));
    assert.ok(Number.isSafeInteger(r.boottime) && Number.isSafeInteger(r.ima_measurement_list_entry));
    assert.equal(r.ima_measurement_list_entry, 3);
    assert.equal(text(r, 'ima_measurement_list').split('\n').length - 1, count - 3);
    verifiedQuote(text(r, 'quote'), 'types1', ak);
    const partial = keylimeResults(await get(target, '/v2.3/quotes/integrity?nonce=types2&mask=0x400&partial=1'));
    assert.equal('pubkey' in partial, false, 'partial=1 leaves pubkey out');
  });

  it('keys/pubkey under every 2.x version, and /version', async () => {
    for (const version of ['2.0', '2.1', '2.2', '2.3', '2.4', '2.5', '2.6']) {
      assert.equal(text(keylimeResults(await get(target, `/v${version}/keys/pubkey`)), 'pubkey'), pubkey);
    }
    assert.deepEqual(keylimeResults(await get(target, '/version')), { supported_version: KEYLIME_API_VERSION });
    const reply = await get(target, '/v3.0/quotes/integrity?nonce=a&mask=0x400&partial=0');
    assert.equal(reply.status, 404);
    assert.equal(errorCode(reply), 'SERVE_NOT_FOUND');
  });

  it('a TPM reset zeroes PCR 16; the next quote binds it again', async () => {
    await served.device.reboot();
    assert.equal(await pcrread16('sha256'), '00'.repeat(32));
    const r = keylimeResults(await get(target, '/v2.2/quotes/integrity?nonce=afterreset&mask=0x400&partial=0'));
    const { pcrs } = verifiedQuote(text(r, 'quote'), 'afterreset', ak);
    assert.equal(toHex(pcrs.find((p) => p.pcr === 16)?.value ?? new Uint8Array(0)), expectedDataPcr(pubkey, 'sha256'));
    assert.equal(await pcrread16('sha256'), expectedDataPcr(pubkey, 'sha256'));
  });

  it('bad partial: 400 in the agent envelope; outside Keylime mode the agent routes answer 503', async () => {
    const bad = await get(target, '/v2.2/quotes/integrity?nonce=a&mask=0x400&partial=2');
    assert.equal(bad.status, 400);
    assert.equal(errorCode(bad), 'SERVE_BAD_PARAMETER');
    const socket = join(served.work, 'plain.sock');
    const plain = await startApiServer({ store: served.device.store, quotes: new TpmQuoter(served.device.tpm) }, { socket });
    try {
      for (const path of ['/v2.2/quotes/integrity?nonce=a&mask=0x400&partial=0', '/v2.2/keys/pubkey', '/version']) {
        const reply = await get({ socket }, path);
        assert.equal(reply.status, 503, path);
        assert.equal(errorCode(reply), 'SERVE_UNAVAILABLE', path);
        const body = json(reply);
        assert.ok(typeof body === 'object' && body !== null && 'code' in body && body.code === 503 && 'results' in body, path);
      }
    } finally {
      await plain.close();
    }
  });

  it('the payload key: kept across opens (mode 0600), RSA only', async () => {
    const path = join(served.work, 'payload.pem');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(openPayloadKey(path).export({ type: 'pkcs8', format: 'pem' }), payloadKey.export({ type: 'pkcs8', format: 'pem' }));
    const ec = join(served.work, 'ec.pem');
    writeFileSync(ec, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    assert.throws(() => openPayloadKey(ec), { code: 'SERVE_BAD_PAYLOAD_KEY' });
    const junk = join(served.work, 'junk.pem');
    writeFileSync(junk, 'not a key');
    assert.throws(() => openPayloadKey(junk), { code: 'SERVE_BAD_PAYLOAD_KEY' });
    await assert.rejects(
      startApiServer(
        { store: served.device.store, keylime: { payloadKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, quotes: new TpmQuoter(served.device.tpm) } },
        { socket: join(served.work, 'ec.sock') },
      ),
      { code: 'SERVE_BAD_PAYLOAD_KEY' },
    );
  });
});
