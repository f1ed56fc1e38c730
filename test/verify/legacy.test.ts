/**
 * A store written before the version-2 nonce (checkpoints quoted with the version-1 rule, no
 * anchor) still opens, exports and verifies: the report lists the fields no signature covers, and
 * a strict verifier refuses it with `VERIFY_UNSIGNED`. A later version-2 checkpoint of the same
 * boot (as the landed version 2 quoted) binds everything before its anchor but the boot number; a
 * version-3 one (what the collector quotes with now) binds that too. Real swtpm quotes, real
 * LevelDB store.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extendedDigest, PcrReplay } from '../../src/ima/index.js';
import { buildBundle } from '../../src/serve/index.js';
import { chainedNonceV1, checkpointNonceV2, ChunkBuilder, nextCheckpointNonce, openStore, type ImaStore, type QuoteLink } from '../../src/store/index.js';
import { parseQuoteAttest, publicKeyFromTpm2b, Tpm, type AttestationKey } from '../../src/tpm/index.js';
import { EvidenceVerifier, VerifyError } from '../../src/verify/index.js';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';
import { ImaWorkload, decodeValue, encodeValue, V1_UNSIGNED_FIELDS, V2_UNSIGNED_FIELDS } from '../../src/testing/index.js';

const QUOTED = [
  { bank: 'sha1', pcr: 10 },
  { bank: 'sha256', pcr: 10 },
] as const;

describe('a store with version-1 checkpoints', () => {
  let dir: string;
  let store: ImaStore;
  let swtpm: SwtpmInstance;
  let tpm: Tpm;
  let ak: AttestationKey;
  let boot: number;
  const workload = new ImaWorkload({ seed: 5, template: 'mixed', violationRate: 0.05 });
  const replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' } });
  let previous: QuoteLink | undefined;

  /** Measures and stores `n` records (extended into the TPM as IMA would), in chunks of 30. */
  async function measure(n: number): Promise<void> {
    const records = [...workload.records(n)];
    for (const r of records) await tpm.pcrExtend(r.pcr, { sha1: extendedDigest(r, 'sha1'), sha256: extendedDigest(r, 'sha256') });
    for (let at = 0; at < records.length; at += 30) {
      const builder = new ChunkBuilder(replay.recordCount);
      for (const r of records.slice(at, at + 30)) {
        builder.add(r, 0);
        replay.extend(r);
      }
      await store.appendChunk(boot, builder.draft(replay.toState()));
    }
  }

  /** The nonce of the next checkpoint by rule `version`, and its anchor (none for version 1). */
  async function nonceOf(version: 1 | 2 | 3): Promise<{ nonce: Uint8Array; anchor?: number }> {
    if (version === 1) return { nonce: chainedNonceV1(previous, (await store.bootRecord(boot)).kernelBootId) };
    const v3 = await nextCheckpointNonce(store, boot, previous);
    if (version === 3) return v3;
    const last = await store.lastChunk(boot);
    assert.ok(last !== undefined && last.chunk.firstIndex + last.chunk.count === v3.anchor);
    const anchor = { count: v3.anchor, head: last.hash };
    return { nonce: checkpointNonceV2({ deviceId: store.meta.deviceId, boot: await store.bootRecord(boot), anchor, previous }), anchor: v3.anchor };
  }

  /** A checkpoint over every stored record, quoted with rule `version` (1 and 2 as the landed versions did). */
  async function checkpoint(version: 1 | 2 | 3): Promise<void> {
    const count = replay.recordCount;
    const { nonce, anchor } = await nonceOf(version);
    const quote = await tpm.quote({ nonce, pcrs: QUOTED, ak });
    await store.storeCheckpoint(boot, { count, pcrs: quote.pcrs, attest: quote.attest, signature: quote.signature, akName: ak.name, nonce, pcrBlob: null, ...(anchor === undefined ? {} : { anchor }) });
    previous = { attest: quote.attest, signature: quote.signature };
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'imakeep-legacy-'));
    store = await openStore(join(dir, 'store'));
    swtpm = await startSwtpm();
    tpm = Tpm.open(swtpm.address);
    ak = await tpm.createAk();
    await store.updateMeta({ akPublic: ak.public, deviceId: 'gw-legacy' });
    const probe = await tpm.quote({ nonce: new Uint8Array(0), pcrs: QUOTED, ak });
    boot = await store.beginBoot({
      kernelBootId: '0b7e4f52-1d2c-4a3e-b0f5-000000000001',
      firstSeen: 1_763_000_000_000,
      resetCount: parseQuoteAttest(probe.attest).clockInfo.resetCount,
      bankModes: { sha1: 'native', sha256: 'native' },
      endianness: 'le',
      template: 'ima-ng',
      templateHash: 'sha256',
    });
    for (let i = 0; i < 3; i++) {
      await measure(70);
      await checkpoint(1);
    }
  });

  after(async () => {
    await store?.close();
    await tpm?.close();
    await swtpm?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const trusted = (): EvidenceVerifier => new EvidenceVerifier({ trustedAk: publicKeyFromTpm2b(ak.public) });

  it('verifies under the version-1 rule; the report lists what no signature covers', async () => {
    const report = trusted().verify((await buildBundle(store)).bytes);
    assert.deepEqual(report.segments.map((s) => [s.to, s.checkpoints, s.binding]), [[210, [70, 140, 210], 'v1']]);
    assert.deepEqual(report.segments[0]?.unsigned, V1_UNSIGNED_FIELDS);
    assert.ok(V1_UNSIGNED_FIELDS.includes('info.template') && V1_UNSIGNED_FIELDS.includes('template names of records'));
  });

  it('strict: refused with VERIFY_UNSIGNED', async () => {
    const bytes = (await buildBundle(store)).bytes;
    assert.throws(() => new EvidenceVerifier({ trustedAk: publicKeyFromTpm2b(ak.public), strict: true }).verify(bytes), (e: unknown) => {
      return e instanceof VerifyError && e.code === 'VERIFY_UNSIGNED' && e.details.check === 'v1-nonce';
    });
  });

  it('a version-1 bundle may not carry a version-2 checkpoint', async () => {
    await measure(40);
    await checkpoint(2);
    const value = decodeValue((await buildBundle(store)).bytes, 'bundle');
    assert.ok(typeof value === 'object' && value !== null && 'version' in value);
    const v1 = encodeValue({ ...value, version: 1 });
    assert.throws(() => trusted().verify(v1), (e: unknown) => e instanceof VerifyError && e.code === 'VERIFY_BUNDLE_CORRUPT' && e.details.check === 'bundle-version');
  });

  it('after a version-2 checkpoint in the same boot, everything up to its anchor is signed but the boot number; strict refuses it', async () => {
    const bytes = (await buildBundle(store)).bytes;
    const report = trusted().verify(bytes);
    assert.deepEqual(report.segments.map((s) => [s.to, s.checkpoints, s.binding, s.unsigned]), [[250, [70, 140, 210, 250], 'v2', V2_UNSIGNED_FIELDS]]);
    assert.deepEqual(V2_UNSIGNED_FIELDS, ['boot']);
    assert.throws(() => new EvidenceVerifier({ trustedAk: publicKeyFromTpm2b(ak.public), strict: true }).verify(bytes), (e: unknown) => {
      return e instanceof VerifyError && e.code === 'VERIFY_UNSIGNED' && e.details.check === 'v2-nonce';
    });
  });

  it('after a version-3 checkpoint in the same boot, everything is signed, the boot number too', async () => {
    await measure(30);
    await checkpoint(3);
    const report = new EvidenceVerifier({ trustedAk: publicKeyFromTpm2b(ak.public), strict: true }).verify((await buildBundle(store)).bytes);
    assert.deepEqual(report.segments.map((s) => [s.to, s.checkpoints, s.binding, s.unsigned]), [[280, [70, 140, 210, 250, 280], 'signed', []]]);
  });
});
