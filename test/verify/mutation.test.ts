/**
 * Every byte of a bundle is covered by a TPM signature, directly or through the nonce chain
 * (store/nonce.ts): a seeded sample of single-byte mutants of a real bundle (the real collector,
 * the FUSE emulator, swtpm; three boots, ≥ 2,000 records, ≥ 10 checkpoints) all fail `verify`
 * with a `VERIFY_*` code (every byte: test/slow/mutation.test.ts). Then the holes issue 13 found,
 * each by name, and the AK rules (pinned, refused without one, trusted on first use when asked).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { computeTemplateDigest, encodeBinaryList, parseBinaryList } from '../../src/ima/index.js';
import { chunkHash, decodeBootRecord, decodeBundle, decodeCheckpoint, decodeChunk, encodeBootRecord, encodeBundle, encodeCheckpoint, type BundleSegment, type DecodedBundle } from '../../src/store/index.js';
import { EvidenceVerifier, VerifyError } from '../../src/verify/index.js';
import { collectEvidence, type Collected } from '../serve/_collected.js';
import { assertEveryMutantFails, mutationOffsets } from './_mutants.js';
import { encodeChunk, encodeValue, decodeValue } from '../../src/testing/index.js';

function rejects(bytes: Uint8Array, code: string, check: string, verifier: EvidenceVerifier): void {
  assert.throws(
    () => verifier.verify(bytes),
    (e: unknown) => e instanceof VerifyError && e.code === code && e.details.check === check,
    `${code} ${check}`,
  );
}

/** The bundle with segment `i` replaced. */
function withSegment(bundle: DecodedBundle, i: number, change: (s: BundleSegment) => BundleSegment): Uint8Array {
  return encodeBundle({ ...bundle, segments: bundle.segments.map((s, j) => (j === i ? change(s) : s)) });
}

/** Rewrites the chunks of a segment from `from` on, each re-linked to the one before (prevHash recomputed). */
function relinked(chunks: readonly Uint8Array[], from: number, change: (records: ReturnType<typeof parseBinaryList>) => void): Uint8Array[] {
  const out = [...chunks];
  let previous: Uint8Array | undefined;
  for (let i = from; i < out.length; i++) {
    const chunk = decodeChunk(out[i] ?? new Uint8Array(0), 'chunk');
    const records = parseBinaryList(chunk.records);
    if (i === from) change(records);
    out[i] = encodeChunk({ ...chunk, records: i === from ? encodeBinaryList(records) : chunk.records, prevHash: previous === undefined ? chunk.prevHash : chunkHash(previous) });
    previous = out[i];
  }
  return out;
}

describe('every byte of a bundle is signed', () => {
  let evidence: Collected;
  let bundle: DecodedBundle;
  const pinned = (): EvidenceVerifier => new EvidenceVerifier({ trustedAk: evidence.ak });

  before(async () => {
    evidence = await collectEvidence({ boots: 3, cycles: 4, records: 180 });
    bundle = decodeBundle(evidence.bundle);
  });

  after(async () => {
    await evidence?.stop();
  });

  it('the bundle: three boots, >= 2,000 records, >= 10 checkpoints, all signed', () => {
    const report = pinned().verify(evidence.bundle);
    assert.deepEqual(report.segments.map((s) => s.boot), [0, 1, 2]);
    const records = report.segments.reduce((n, s) => n + s.to - s.from, 0);
    const checkpoints = report.segments.reduce((n, s) => n + s.checkpoints.length, 0);
    assert.ok(records >= 2000 && checkpoints >= 10, `${records} records, ${checkpoints} checkpoints`);
    assert.ok(report.segments.every((s) => s.binding === 'signed' && s.unsigned.length === 0));
    assert.equal(report.akTrust, 'pinned');
  });

  it('a seeded sample of 3,000 single-byte mutants: every one fails with a VERIFY_* code', () => {
    const tally = assertEveryMutantFails(evidence.bundle, evidence.ak, mutationOffsets(evidence.bundle.length, 3000));
    assert.equal(tally.detected, tally.tried);
    process.stdout.write(`# mutants: ${tally.tried} tried, ${tally.detected} detected of ${evidence.bundle.length} bytes ${JSON.stringify(tally.codes)}\n`);
  });

  it('cursor 0.0.1 with a changed kernel boot id: refused (the cursor cannot skip the first nonce)', () => {
    const cursor = encodeBundle({ ...bundle, cursor: { boot: 0, index: 0, checkpoint: 1 } });
    rejects(cursor, 'VERIFY_CHAIN_GAP', 'bundle-cursor', pinned());
    const bootId = withSegment(bundle, 0, (s) => ({ ...s, info: { ...s.info, kernelBootId: `${s.info.kernelBootId.slice(0, -1)}f` } }));
    rejects(bootId, 'VERIFY_NONCE_CHAIN', 'nonce-chain', pinned());
    const both = encodeBundle({ ...decodeBundle(bootId), cursor: { boot: 0, index: 0, checkpoint: 1 } });
    rejects(both, 'VERIFY_CHAIN_GAP', 'bundle-cursor', pinned());
  });

  it('every boot metadata field and the device id are bound by the nonces', () => {
    const changes: ((s: BundleSegment) => BundleSegment)[] = [
      (s) => ({ ...s, info: { ...s.info, firstSeen: s.info.firstSeen + 1 } }),
      (s) => ({ ...s, info: { ...s.info, template: 'ima-sig' } }),
      (s) => ({ ...s, info: { ...s.info, templateHash: 'sha512' } }),
    ];
    for (const change of changes) rejects(withSegment(bundle, 1, change), 'VERIFY_NONCE_CHAIN', 'nonce-chain', pinned());
    rejects(encodeBundle({ ...bundle, deviceId: 'someone-else' }), 'VERIFY_NONCE_CHAIN', 'nonce-chain', pinned());
  });

  it('boot numbers are bound: boots renumbered, cursors with them, are refused', () => {
    const renumbered = (to: (boot: number) => number): Uint8Array =>
      encodeBundle({
        ...bundle,
        cursor: { ...bundle.cursor, boot: to(bundle.cursor.boot) },
        next: { ...bundle.next, boot: to(bundle.next.boot) },
        segments: bundle.segments.map((s) => ({ ...s, boot: to(s.boot) })),
      });
    // Every boot one up: in order, consistent with the cursors; only the nonces know the numbers.
    rejects(renumbered((b) => b + 1), 'VERIFY_NONCE_CHAIN', 'nonce-chain', pinned());
    // The last boot moved up to 5 (a gap the format allows: a boot without checkpoints sends no segment).
    rejects(renumbered((b) => (b === 2 ? 5 : b)), 'VERIFY_NONCE_CHAIN', 'nonce-chain', pinned());
    assert.equal(pinned().verify(renumbered((b) => b)).segments.length, 3);
  });

  it('a template name rewritten in chunk 0, later prevHash values recomputed: refused', () => {
    const forged = withSegment(bundle, 0, (s) => ({
      ...s,
      chunks: relinked(s.chunks, 0, (records) => {
        const r = records[3];
        if (r !== undefined) records[3] = { ...r, template: r.template === 'ima-ng' ? 'ima-sg' : 'ima-ng' };
      }),
    }));
    rejects(forged, 'VERIFY_NONCE_CHAIN', 'nonce-chain', pinned());
  });

  it("a violation record's data rewritten in chunk 0, later prevHash values recomputed: refused", () => {
    const forged = withSegment(bundle, 0, (s) => ({
      ...s,
      chunks: relinked(s.chunks, 0, (records) => {
        const at = records.findIndex((r) => r.digest.every((b) => b === 0));
        const r = records[at];
        assert.ok(r !== undefined, 'chunk 0 holds a violation record');
        const data = Uint8Array.from(r.data);
        data[data.length - 1] = (data[data.length - 1] ?? 0) ^ 1;
        records[at] = { ...r, data };
      }),
    }));
    rejects(forged, 'VERIFY_NONCE_CHAIN', 'nonce-chain', pinned());
  });

  it("a byte of a boot's last chunk (a template name, digest consistent): refused", () => {
    for (const i of [0, 1, 2]) {
      const forged = withSegment(bundle, i, (s) => ({
        ...s,
        chunks: relinked(s.chunks, s.chunks.length - 1, (records) => {
          const last = records.length - 1;
          const r = records[last];
          if (r !== undefined) records[last] = { ...r, template: `${r.template.slice(0, -1)}x`, digest: computeTemplateDigest(r, 'sha1') };
        }),
      }));
      rejects(forged, 'VERIFY_NONCE_CHAIN', 'nonce-chain', pinned());
    }
  });

  it('pcrBlob bytes changed: refused', () => {
    const forged = withSegment(bundle, 1, (s) => ({
      ...s,
      checkpoints: s.checkpoints.map((bytes, i) => {
        if (i !== 1) return bytes;
        const c = decodeCheckpoint(bytes, 'c');
        const blob = Uint8Array.from(c.pcrBlob ?? new Uint8Array(0));
        blob[blob.length - 1] = (blob[blob.length - 1] ?? 0) ^ 1;
        return encodeCheckpoint({ ...c, pcrBlob: blob });
      }),
    }));
    rejects(forged, 'VERIFY_SIGNATURE', 'pcr-blob', pinned());
  });

  it('resetCount null: refused (the check is not skipped)', () => {
    const forged = withSegment(bundle, 2, (s) => ({ ...s, info: { ...s.info, resetCount: null } }));
    rejects(forged, 'VERIFY_CLOCK_ORDER', 'reset-count', pinned());
  });

  it('the boot record round-trips without an export mark (the bundle carries none)', () => {
    const info = bundle.segments[0]?.info;
    assert.ok(info !== undefined);
    assert.deepEqual(decodeBootRecord(encodeBootRecord({ ...info, exported: null }), 'k'), { ...info, exported: null });
    const marked = decodeValue(evidence.bundle, 'b') as { segments: { info: Uint8Array }[] };
    const first = marked.segments[0];
    assert.ok(first !== undefined);
    first.info = encodeBootRecord({ ...info, exported: { cursor: 1, at: 1 } });
    rejects(encodeValue(marked), 'VERIFY_BUNDLE_CORRUPT', 'bundle-decode', pinned());
  });

  it('without a trusted AK: VERIFY_AK; trusted on first use when asked, and the report says so', () => {
    assert.throws(() => new EvidenceVerifier({}), { code: 'VERIFY_AK' });
    const tofu = new EvidenceVerifier({ trustOnFirstUse: true });
    assert.equal(tofu.verify(evidence.bundle).akTrust, 'first-use');
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    rejects(evidence.bundle, 'VERIFY_AK', 'ak-trusted', new EvidenceVerifier({ trustedAk: other }));
  });
});
