/**
 * A big-endian kernel (docs/ima-formats.md#byte-order: lists in the CPU's byte order unless
 * `ima_canonical_fmt`): the store holds its records little-endian, and the served binary lists are
 * the big-endian lists the kernel showed, for the SHA-1 and SHA-256 banks; the ASCII list is the
 * same text either way.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertTemplateData, encodeBinaryList, extendedDigest, formatAsciiLineBytes, PcrReplay, type ImaRecord } from '../../src/ima/index.js';
import { buildBundle, openLog } from '../../src/serve/index.js';
import { EvidenceVerifier } from '../../src/verify/index.js';
import { ChunkBuilder, nextCheckpointNonce, openStore } from '../../src/store/index.js';
import { parseQuoteAttest, publicKeyFromTpm2b, Tpm } from '../../src/tpm/index.js';
import { startSwtpm } from '../../hw/swtpm.js';
import { ImaWorkload } from '../../src/testing/index.js';

async function bytesOf(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of chunks) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

it('a big-endian boot is served in big-endian, byte for byte', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-be-'));
  const store = await openStore(join(dir, 'store'));
  const swtpm = await startSwtpm();
  const tpm = Tpm.open(swtpm.address);
  try {
    const ak = await tpm.createAk();
    const QUOTED = [{ bank: 'sha1', pcr: 10 }, { bank: 'sha256', pcr: 10 }] as const;
    const probe = await tpm.quote({ nonce: new Uint8Array(0), pcrs: QUOTED, ak });
    const boot = await store.beginBoot({
      kernelBootId: 'be-boot',
      firstSeen: 0,
      resetCount: parseQuoteAttest(probe.attest).clockInfo.resetCount,
      bankModes: { sha1: 'native', sha256: 'native' },
      endianness: 'be',
      template: 'ima-sig',
      templateHash: 'sha256',
    });
    const kernel: ImaRecord[] = [...new ImaWorkload({ seed: 3, template: 'mixed', endian: 'be', violationRate: 0.05 }).records(150)];
    // What the collector stores: the same records with little-endian template data.
    const stored = kernel.map((r) => ({ ...r, data: convertTemplateData(r.template, r.data, 'be', 'le') }));
    // The kernel's template digests cover the data as it showed them (big-endian lengths).
    const replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' }, endian: 'be' });
    for (let at = 0; at < stored.length; at += 40) {
      const builder = new ChunkBuilder(at);
      stored.slice(at, at + 40).forEach((r, i) => {
        builder.add(r, 0);
        replay.extend(kernel[at + i] ?? r);
      });
      await store.appendChunk(boot, builder.draft(replay.toState()));
    }
    // The big-endian kernel extended the TPM with digests of its big-endian data; one quote covers it.
    for (const r of kernel) await tpm.pcrExtend(r.pcr, { sha1: extendedDigest(r, 'sha1', 'native', 'be'), sha256: extendedDigest(r, 'sha256', 'native', 'be') });
    const { nonce, anchor } = await nextCheckpointNonce(store, boot, undefined);
    const quote = await tpm.quote({ nonce, pcrs: QUOTED, ak });
    await store.updateMeta({ akPublic: ak.public });
    await store.storeCheckpoint(boot, { count: stored.length, pcrs: quote.pcrs, attest: quote.attest, signature: quote.signature, akName: ak.name, nonce, pcrBlob: null, anchor });
    for (const bank of ['sha1', 'sha256'] as const) {
      const served = await bytesOf((await openLog({ store }, { bank, from: 7 })).bytes());
      assert.ok(served.equals(Buffer.from(encodeBinaryList(kernel.slice(7), { bank, endian: 'be' }))), `${bank} binary`);
    }
    const ascii = await bytesOf((await openLog({ store }, { format: 'ascii' })).bytes());
    assert.ok(ascii.equals(Buffer.concat(kernel.map((r) => formatAsciiLineBytes(r, { endian: 'be' })))));
    // The verifier replays the big-endian data too: every chunk's stored state matches.
    await store.beginBoot({ kernelBootId: 'next', firstSeen: 1, resetCount: null, bankModes: { sha1: 'native' }, endianness: 'le', template: 'ima-ng', templateHash: 'sha256' });
    const report = new EvidenceVerifier({ trustedAk: publicKeyFromTpm2b(ak.public) }).verify((await buildBundle(store)).bytes);
    assert.deepEqual(report.segments.map((s) => [s.boot, s.from, s.to, s.chunks, s.checkpoints, s.binding]), [[0, 0, 150, 4, [150], 'signed']]);
    assert.equal(report.next, '1.0.0');
  } finally {
    await store.close();
    await tpm.close();
    await swtpm.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
