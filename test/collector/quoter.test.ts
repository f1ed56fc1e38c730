/**
 * One owner of the TPM in the daemon: the collector's checkpoint quotes and the HTTP API's quotes
 * share a `Tpm`, and on `/dev/tpmrm0` closing the connection flushes the client's transient
 * objects (the kernel resource manager flushes on fd close). The transport below does that in
 * front of a real swtpm; two users quoting concurrently must never lose their AK mid-quote.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Tpm, TpmQuoter, openTpmTransport, publicKeyFromTpm2b, verifyQuote, type TpmTransport } from '../../src/tpm/index.js';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';

/** A transport that flushes every transient object when it closes, as /dev/tpmrm0 does. */
class ResourceManagedTransport implements TpmTransport {
  readonly #inner: TpmTransport;
  closes = 0;

  constructor(inner: TpmTransport) {
    this.#inner = inner;
  }

  send(command: Uint8Array): Promise<Uint8Array> {
    return this.#inner.send(command);
  }

  async close(): Promise<void> {
    this.closes++;
    await new Tpm(this.#inner).flushAllTransients();
    await this.#inner.close();
  }
}

describe('TPM sharing between the collector and the HTTP API', () => {
  let swtpm: SwtpmInstance;

  before(async () => {
    swtpm = await startSwtpm();
  });

  after(async () => {
    await swtpm?.stop();
  });

  it('two concurrent quote users on one Tpm (closing flushes, as tpmrm0): every quote verifies', async () => {
    const transport = new ResourceManagedTransport(openTpmTransport(swtpm.address));
    const tpm = new Tpm(transport);
    try {
      // As examples/gateway.ts and `imakeep run` wire them: each source built on the same Tpm.
      const collector = new TpmQuoter(tpm);
      const api = new TpmQuoter(tpm);
      const rounds = 6;
      const nonce = (who: string, i: number): Uint8Array => new TextEncoder().encode(`${who}-${i}`);
      const [checkpoints, verifierQuotes] = await Promise.all([
        Promise.all(Array.from({ length: rounds }, (_, i) => collector.quote(nonce('c', i), [{ bank: 'sha256', pcr: 10 }]))),
        Promise.all(Array.from({ length: rounds }, (_, i) => api.quoteAndRead(nonce('a', i), [{ bank: 'sha256', pcr: 10 }]))),
      ]);
      const pcrs = await collector.readPcrs([{ bank: 'sha256', pcr: 10 }]);
      checkpoints.forEach((q, i) => {
        const attest = verifyQuote({ attest: q.attest, signature: q.signature, akPublic: publicKeyFromTpm2b(q.akPublic), nonce: nonce('c', i), pcrs });
        assert.deepEqual(attest.extraData, nonce('c', i));
      });
      verifierQuotes.forEach((q, i) => {
        const attest = verifyQuote({ attest: q.attest, signature: q.signature, akPublic: publicKeyFromTpm2b(q.akPublic), nonce: nonce('a', i), pcrs: q.pcrs });
        assert.deepEqual(attest.extraData, nonce('a', i));
      });
      // Each operation released the connection (swtpm and other agents share the TPM), and no
      // transient object is left behind.
      assert.ok(transport.closes >= 2 * rounds, `closes ${transport.closes}`);
      assert.deepEqual(await new TpmQuoter(tpm).readPcrs([{ bank: 'sha256', pcr: 10 }]), pcrs);
      assert.deepEqual(await tpm.transientHandles(), []);
    } finally {
      await tpm.close();
    }
  });
});
