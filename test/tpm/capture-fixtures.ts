/**
 * Regenerates `test/tpm/fixtures/swtpm-exchanges.json`: real command/response pairs from a fresh
 * swtpm, used by the offline tests (truncation fault injection, quote verification, name and key
 * conversion). Run: `npx tsc -p . && node dist/test/tpm/capture-fixtures.js`.
 */
import { writeFileSync } from 'node:fs';
import { startSwtpm } from '../../hw/swtpm.js';
import { Tpm, type TpmTransport, openTpmTransport } from '../../src/tpm/index.js';

/** One recorded exchange, hex encoded. */
export interface Exchange {
  readonly label: string;
  readonly command: string;
  readonly response: string;
}

/** Wraps a transport and records every exchange under the label set before the call. */
class RecordingTransport implements TpmTransport {
  readonly exchanges: Exchange[] = [];
  label = '';

  constructor(private readonly inner: TpmTransport) {}

  async send(command: Uint8Array): Promise<Uint8Array> {
    const response = await this.inner.send(command);
    const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
    this.exchanges.push({ label: this.label, command: hex(command), response: hex(response) });
    return response;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

const swtpm = await startSwtpm();
const rec = new RecordingTransport(openTpmTransport(swtpm.address));
const tpm = new Tpm(rec);
try {
  rec.label = 'pcr-extend';
  await tpm.pcrExtend(10, { sha1: new Uint8Array(20).fill(0xaa), sha256: new Uint8Array(32).fill(0xbb) });
  rec.label = 'pcr-read';
  await tpm.pcrRead([{ bank: 'sha1', pcr: 10 }, { bank: 'sha256', pcr: 10 }]);
  rec.label = 'get-capability-pcrs';
  await tpm.getActiveBanks();
  for (const alg of ['ecc', 'rsa'] as const) {
    rec.label = `create-primary-${alg}`;
    const ak = await tpm.createAk({ alg });
    rec.label = `quote-${alg}`;
    await tpm.quote({ nonce: new Uint8Array(32).fill(0x42), pcrs: [{ bank: 'sha256', pcr: 10 }, { bank: 'sha1', pcr: 10 }], ak });
    rec.label = 'get-capability-handles';
    await tpm.transientHandles();
    rec.label = `flush-${alg}`;
    await tpm.flush(ak.handle);
  }
  rec.label = 'get-random';
  await tpm.getRandom(16);
  writeFileSync(new URL('../../../test/tpm/fixtures/swtpm-exchanges.json', import.meta.url), `${JSON.stringify(rec.exchanges, null, 1)}\n`);
} finally {
  await tpm.close();
  await swtpm.stop();
}
