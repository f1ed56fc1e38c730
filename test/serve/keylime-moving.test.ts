/**
 * Quotes on a device whose PCR 10 moves all the time, on `/v1/quote` and in Keylime mode: the PCR
 * blob must hold the values the TPM quoted (a Keylime verifier hashes them against the quote's
 * pcrDigest), PCR 10's found by replaying the log as the collector does, not by a PCR_Read that IMA
 * has already moved past; the PCRs that do not move (PCR 0, Keylime's PCR 16) read after the quote.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AsciiListParser, PcrReplay, replayUntilMatch, toHex } from '../../src/ima/index.js';
import { publicKeyFromTpm2b, TpmQuoter, type PcrBinder, type PcrValue, type QuoteSource } from '../../src/tpm/index.js';
import { startApiServer, type ApiServer } from '../../src/serve/index.js';
import { CollectedDevice } from './_collected.js';
import { get, json, type Target } from './_http.js';
import { expectedDataPcr, keylimeResults, text, verifiedQuote } from './_keylime.js';

/** A `/v1/quote` answer's PCR values after checking it with its own `pubkey` (the AK), and its list. */
function verifiedReply(results: Record<string, unknown>, nonce: string): { pcrs: readonly PcrValue[]; list: string } {
  const { pcrs } = verifiedQuote(text(results, 'quote'), nonce, createPublicKey(text(results, 'pubkey')));
  return { pcrs, list: text(results, 'ima_measurement_list') };
}

/** Record count at which the ASCII list's replay reaches `pcr10` (sha256), or null. */
function replayedTo(list: string, pcr10: Uint8Array): number | null {
  const records = new AsciiListParser({ bank: 'sha1' }).push(new TextEncoder().encode(list));
  return replayUntilMatch(records, { sha256: pcr10 }, { replay: new PcrReplay({ banks: { sha256: 'native' }, verifyDigests: false }) });
}

describe('Keylime quote while IMA keeps extending PCR 10', () => {
  let device: CollectedDevice;
  let work: string;
  let target: Target;
  let server: ApiServer;
  let keylimeServer: ApiServer;
  let keylimeTarget: Target;
  let reads = 0;
  let pcrReads = 0;
  const payloadKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'imakeep-moving-'));
    device = await CollectedDevice.start({ chunkRecords: 16, readWindowRecords: 5 });
    await device.cycle(40);
    await device.measure(7);
    // IMA extends right after every quote: a PCR_Read would see values the quote does not hold.
    const moving = (tpm: TpmQuoter): QuoteSource & PcrBinder => ({
      activeBanks: () => tpm.activeBanks(),
      async readPcrs(pcrs) {
        pcrReads++;
        return tpm.readPcrs(pcrs);
      },
      async quote(nonce, pcrs) {
        const quote = await tpm.quote(nonce, pcrs);
        await device.measure(3);
        return quote;
      },
      async quoteAndRead(nonce, pcrs) {
        reads++;
        return tpm.quoteAndRead(nonce, pcrs);
      },
      resetAndExtend: (pcr, digests) => tpm.resetAndExtend(pcr, digests),
    });
    target = { socket: join(work, 'api.sock') };
    server = await startApiServer({ store: device.store, tail: device.tail(), quotes: moving(new TpmQuoter(device.tpm)) }, target);
    keylimeTarget = { socket: join(work, 'keylime.sock') };
    keylimeServer = await startApiServer(
      { store: device.store, tail: device.tail(), keylime: { payloadKey, quotes: moving(new TpmQuoter(device.tpm, { alg: 'rsa' })) } },
      keylimeTarget,
    );
  });

  after(async () => {
    await keylimeServer?.close();
    await server?.close();
    await device?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('PCR 10: the blob holds the quoted values (found by replay), and the log replays to them', async () => {
    for (let round = 0; round < 3; round++) {
      const before = device.records().length;
      const nonce = `moving${round}`;
      const { pcrs, list } = verifiedReply(keylimeResults(await get(target, `/v1/quote?nonce=${nonce}&mask=0x400&ima_ml_entry=0`)), nonce);
      const [pcr10] = pcrs;
      assert.ok(pcr10 !== undefined && pcr10.bank === 'sha256' && pcr10.pcr === 10);
      // The quote covers exactly the records measured before it, and the TPM has moved on since.
      assert.equal(replayedTo(list, pcr10.value), before);
      const [now] = await device.tpm.pcrRead([{ bank: 'sha256', pcr: 10 }]);
      assert.notEqual(toHex(now?.value ?? new Uint8Array(0)), toHex(pcr10.value));
    }
    assert.equal(reads, 0);
  });

  it('other PCRs in the mask: read after the quote (no log replays PCR 0), PCR 10 still by replay', async () => {
    const before = device.records().length;
    const { pcrs, list } = verifiedReply(keylimeResults(await get(target, '/v1/quote?nonce=mixed&mask=0x401')), 'mixed');
    assert.deepEqual(pcrs.map((p) => p.pcr), [0, 10]);
    assert.equal(replayedTo(list, pcrs[1]?.value ?? new Uint8Array(0)), before);
    assert.equal(pcrReads, 1);
    assert.equal(reads, 0);
  });

  it('GET /v1/status: one summary per boot, as `imakeep status` shows it from the store', async () => {
    const body = json(await get(target, '/v1/status'));
    assert.ok(typeof body === 'object' && body !== null && 'boots' in body && Array.isArray(body.boots));
    const record = await device.store.bootRecord(0);
    assert.deepEqual(body.boots, [
      { boot: 0, kernelBootId: record.kernelBootId, firstSeen: record.firstSeen, stored: 40, checkpointed: 40, removed: 40, pendingRemoval: null, exported: 0 },
    ]);
  });

  it('Keylime mode: PCR 16 read after the quote, PCR 10 by replay, on every round of an incremental pull', async () => {
    const rsaAk = await device.tpm.createAk({ alg: 'rsa' });
    await device.tpm.flush(rsaAk.handle);
    const ak = publicKeyFromTpm2b(rsaAk.public);
    let next = 0;
    const replay = new PcrReplay({ banks: { sha256: 'native' }, verifyDigests: false });
    const parser = new AsciiListParser({ bank: 'sha1' });
    let pubkey = '';
    for (let round = 0; round < 4; round++) {
      await device.cycle(11 + round);
      const before = device.records().length;
      const nonce = `klmoving${round}`;
      const r = keylimeResults(await get(keylimeTarget, `/v2.2/quotes/integrity?nonce=${nonce}&mask=0x400&partial=${round === 0 ? 0 : 1}&ima_ml_entry=${next}`));
      if (round === 0) pubkey = text(r, 'pubkey');
      const { pcrs } = verifiedQuote(text(r, 'quote'), nonce, ak);
      assert.deepEqual(pcrs.map((p) => p.pcr), [10, 16]);
      assert.equal(toHex(pcrs[1]?.value ?? new Uint8Array(0)), expectedDataPcr(pubkey, 'sha256'));
      const list = text(r, 'ima_measurement_list');
      let replayed = next;
      let atQuote: string | undefined;
      for (const rec of parser.push(new TextEncoder().encode(list))) {
        replay.extend(rec);
        if (++replayed === before) atQuote = toHex(replay.value('sha256', 10));
      }
      assert.equal(atQuote, toHex(pcrs[0]?.value ?? new Uint8Array(0)), `round ${round}: the lines up to the quote replay to its PCR 10`);
      assert.ok(replayed > before, 'the list goes past the quote: IMA moved on');
      assert.ok(device.removed > next, 'records were removed from the kernel meanwhile');
      next = replayed;
    }
    assert.equal(reads, 0);
  });
});
