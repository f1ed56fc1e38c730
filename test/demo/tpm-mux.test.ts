/**
 * The TPM multiplexer of the demo and the memory-pressure bench, on a real swtpm: two clients at
 * once (the emulated kernel extending, the collector reading) both get answers, and the PCR ends
 * where the extends, applied in some order of whole commands, put it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';
import { toHex } from '../../src/ima/index.js';
import { Tpm } from '../../src/tpm/index.js';
import { startTpmMultiplexer, type TpmMultiplexer } from '../../bench/_tpm-mux.js';

describe('TPM multiplexer on swtpm', () => {
  let swtpm: SwtpmInstance;
  let mux: TpmMultiplexer;

  before(async () => {
    swtpm = await startSwtpm();
    mux = await startTpmMultiplexer(swtpm.host, swtpm.port);
  });

  after(async () => {
    await mux?.close();
    await swtpm?.stop();
  });

  it('serves two clients at once; PCR 10 = the chain of every extend', async () => {
    const extender = Tpm.open(mux.address);
    const reader = Tpm.open(mux.address);
    try {
      const digests = Array.from({ length: 200 }, (_, i) => createHash('sha256').update(`record ${i}`).digest());
      const reads: string[] = [];
      await Promise.all([
        (async () => {
          for (const d of digests) await extender.pcrExtend(10, { sha256: d });
        })(),
        (async () => {
          for (let i = 0; i < 50; i++) {
            const [v] = await reader.pcrRead([{ bank: 'sha256', pcr: 10 }]);
            reads.push(toHex(v?.value ?? new Uint8Array()));
          }
        })(),
      ]);
      let expected: Buffer = Buffer.alloc(32);
      const chain = [toHex(expected)];
      for (const d of digests) {
        expected = createHash('sha256').update(expected).update(d).digest();
        chain.push(toHex(expected));
      }
      const [final] = await reader.pcrRead([{ bank: 'sha256', pcr: 10 }]);
      assert.equal(toHex(final?.value ?? new Uint8Array()), toHex(expected));
      // every read saw a whole prefix of the extends: commands are never interleaved mid-frame
      for (const r of reads) assert.ok(chain.includes(r), `read ${r} is not a prefix state`);
      assert.equal(mux.commands(), 200 + 50 + 1);
    } finally {
      await extender.close();
      await reader.close();
    }
  });

  it('a client that disconnects mid-command does not stall the others', async () => {
    const { connect } = await import('node:net');
    const port = Number(mux.address.split(':').pop());
    const rude = connect({ host: '127.0.0.1', port });
    await new Promise((r) => rude.once('connect', r));
    rude.write(new Uint8Array([0x80, 0x01, 0x00, 0x00, 0x00, 0x40])); // a header promising 64 bytes
    rude.destroy();
    const tpm = Tpm.open(mux.address);
    try {
      const [v] = await tpm.pcrRead([{ bank: 'sha256', pcr: 0 }]);
      assert.equal(toHex(v?.value ?? new Uint8Array()), '00'.repeat(32));
    } finally {
      await tpm.close();
    }
  });
});
