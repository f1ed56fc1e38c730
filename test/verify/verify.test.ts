/**
 * Evidence bundles from the real collector (test/serve/_collected.ts) verify offline, across
 * bundles and boots; every single-byte change of a bundle is noticed; targeted forgeries fail with
 * the precise first check; a verifier resumes from a saved state; an export cut at random points
 * and resumed has no gap and no duplicate.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { computeTemplateDigest, encodeBinaryList, isViolation, parseBinaryList, type ImaRecord } from '../../src/ima/index.js';
import { decodeCheckpoint, decodeChunk, encodeCheckpoint } from '../../src/store/index.js';
import { decodeBundle, encodeBundle, type BundleSegment, type EvidenceBundle } from '../../src/serve/index.js';
import { publicKeyFromTpm2b } from '../../src/tpm/index.js';
import { EvidenceVerifier, trustedAkFromPem, VerifyError, verifyStateFromJson, verifyStateToJson, type BundleReport } from '../../src/verify/index.js';
import type { CollectedDevice } from '../serve/_collected.js';
import { get, type Target } from '../serve/_http.js';
import { ServedDevice } from '../serve/_served.js';
import { fetchAll } from './_bundles.js';
import { encodeChunk, clockOrderViolation } from '../../src/testing/index.js';

function verifyAll(bundles: readonly Uint8Array[], verifier: EvidenceVerifier): BundleReport[] {
  return bundles.map((b) => verifier.verify(b));
}

function rejects(bytes: Uint8Array, code: string, check: string, verifier: EvidenceVerifier): VerifyError {
  try {
    verifier.verify(bytes);
  } catch (e) {
    assert.ok(e instanceof VerifyError, `not a VerifyError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.equal(e.details.check, check, e.message);
    return e;
  }
  assert.fail(`verified, expected ${code}/${check}`);
}

/** The bundle with `segment` of index `i` replaced. */
function withSegment(bundle: EvidenceBundle, i: number, change: (s: BundleSegment) => BundleSegment): Uint8Array {
  return encodeBundle({ ...bundle, segments: bundle.segments.map((s, j) => (j === i ? change(s) : s)) });
}

/**
 * A chunk with its first non-violation record at or after position `at` altered (a byte of its
 * template data flipped, its SHA-1 digest made consistent again); returns the chunk and the
 * record's global index.
 */
function forgeRecord(chunkBytes: Uint8Array, at: number): { chunk: Uint8Array; index: number } {
  const chunk = decodeChunk(chunkBytes, 'test');
  const parsed = parseBinaryList(chunk.records);
  const target = parsed.findIndex((r, i) => i >= at && !isViolation(r));
  const records: ImaRecord[] = parsed.map((r, i) => {
    if (i !== target) return r;
    const data = Uint8Array.from(r.data);
    data[data.length - 2] = (data[data.length - 2] ?? 0) ^ 0x20;
    return { ...r, data, digest: computeTemplateDigest({ template: r.template, data }, 'sha1') };
  });
  return { chunk: encodeChunk({ ...chunk, records: encodeBinaryList(records) }), index: chunk.firstIndex + target };
}

describe('evidence bundles verify offline', () => {
  let served: ServedDevice;
  let device: CollectedDevice;
  let target: Target;
  let akPem: string;

  before(async () => {
    served = await ServedDevice.start('verify', { chunkRecords: 30 });
    device = served.device;
    akPem = String(publicKeyFromTpm2b((await device.ak()).public).export({ type: 'spki', format: 'pem' }));
    for (let i = 0; i < 5; i++) await device.cycle(47 + 7 * i);
    await device.measure(12);
    await device.collect(); // stored, not checkpointed: not exported yet
    await device.reboot();
    for (let i = 0; i < 3; i++) await device.cycle(35);
    ({ target } = await served.serve());
  });

  after(async () => {
    await served?.close();
  });

  const trusted = (): ReturnType<typeof trustedAkFromPem> => trustedAkFromPem(akPem);

  it('all bundles verify in sequence, across both boots, every checkpoint checked', async () => {
    const bundles = await fetchAll(target, undefined, 12_000);
    assert.ok(bundles.length >= 4, `${bundles.length} bundles`);
    const reports = verifyAll(bundles.map((b) => b.bytes), new EvidenceVerifier({ trustedAk: trusted() }));
    const segments = reports.flatMap((r) => r.segments);
    const boot0 = segments.filter((s) => s.boot === 0);
    const boot1 = segments.filter((s) => s.boot === 1);
    // Boot 0 is finished: exported up to its last checkpoint's anchor; the 12 records stored after
    // it are signed by nothing, so they stay in the store and out of the evidence.
    assert.equal(boot0.at(-1)?.to, (await device.store.lastCheckpoint(0))?.anchor);
    assert.equal(boot0.at(-1)?.to, device.records(0).length - 12);
    assert.equal(await device.store.storedCount(0), device.records(0).length);
    // Boot 1 is live: exported up to the last checkpoint.
    assert.equal(boot1.at(-1)?.to, (await device.store.lastCheckpoint(1))?.count);
    const checked = segments.flatMap((s) => s.checkpoints.map((c) => `${s.boot}:${c}`));
    const stored: string[] = [];
    for (const boot of [0, 1]) for await (const c of device.store.checkpoints(boot)) stored.push(`${boot}:${c.count}`);
    assert.deepEqual(checked, stored);
    assert.ok(reports.every((r) => r.akTrust === 'pinned'));
    assert.deepEqual(boot0[0]?.info.kernelBootId, (await device.store.bootRecord(0)).kernelBootId);
  });

  it('the same cursor gives the same bytes', async () => {
    const bundles = await fetchAll(target, undefined, 12_000);
    for (const b of bundles.slice(0, 3)) {
      const again = await get(target, `/v1/evidence?max_bytes=12000${b.cursor === undefined ? '' : `&since=${b.cursor}`}`);
      assert.ok(again.body.equals(b.bytes), `cursor ${b.cursor}`);
    }
  });

  it('a verifier resumes from a saved state (JSON) and continues with the next bundle', async () => {
    const bundles = await fetchAll(target, undefined, 12_000);
    const first = new EvidenceVerifier({ trustedAk: trusted() });
    first.verify(bundles[0]?.bytes ?? new Uint8Array(0));
    const state = first.state;
    assert.ok(state !== undefined);
    const saved = JSON.stringify(verifyStateToJson(state));
    const resumed = new EvidenceVerifier({ trustedAk: trusted(), state: verifyStateFromJson(saved) });
    const report = resumed.verify(bundles[1]?.bytes ?? new Uint8Array(0));
    assert.equal(report.segments[0]?.start, 'state');
    // A bundle that does not start where the state ends is refused.
    const other = new EvidenceVerifier({ trustedAk: trusted(), state: verifyStateFromJson(saved) });
    rejects(bundles[2]?.bytes ?? new Uint8Array(0), 'VERIFY_CHAIN_GAP', 'bundle-cursor', other);
  });

  it('a bundle verified alone (no state) starts from its claimed replay state; its first nonce chains from the quote the bundle states', async () => {
    const bundles = await fetchAll(target, undefined, 12_000);
    // The rest of boot 0 in one bundle: every checkpoint's nonce is recomputed, the first one's
    // from the previous quote the segment states (docs/store.md#starting-mid-boot).
    const rest = await fetchAll(target, bundles[0]?.next, 1_000_000);
    const report = new EvidenceVerifier({ trustedAk: trusted() }).verify(rest[0]?.bytes ?? new Uint8Array(0));
    assert.equal(report.segments[0]?.start, 'claimed');
    assert.ok((report.segments[0]?.checkpoints.length ?? 0) >= 2);
    assert.equal(report.segments[0]?.binding, 'signed');
    // With one checkpoint only: bound too. Without the stated quote (a bundle written before the
    // field) nothing in hand would bind its records: refused (test/verify/midboot.test.ts).
    const one = bundles[1]?.bytes ?? new Uint8Array(0);
    const alone = new EvidenceVerifier({ trustedAk: trusted() }).verify(one);
    assert.deepEqual([alone.segments[0]?.checkpoints.length, alone.segments[0]?.binding], [1, 'signed']);
    const decoded = decodeBundle(one);
    const stripped = encodeBundle({ ...decoded, segments: decoded.segments.map((s) => ({ ...s, previous: null })) });
    rejects(stripped, 'VERIFY_UNSIGNED', 'unsigned-records', new EvidenceVerifier({ trustedAk: trusted() }));
  });

  it('forgeries fail at the precise first check', async () => {
    const bundles = await fetchAll(target, undefined, 1_000_000);
    const bytes = bundles[0]?.bytes ?? Buffer.alloc(0);
    const bundle = decodeBundle(bytes);
    const seg = bundle.segments[0];
    assert.ok(seg !== undefined && seg.chunks.length > 3 && seg.checkpoints.length > 2);
    const fresh = (): EvidenceVerifier => new EvidenceVerifier({ trustedAk: trusted() });

    // A renamed file after checkpoint 47: the chunk's stored replay state no longer matches.
    // The collector seals its open chunk at each cycle's end: a chunk starts at 47, the first checkpoint.
    assert.equal(decodeCheckpoint(seg.checkpoints[0] ?? new Uint8Array(0), 't').count, 47);
    const at47 = seg.chunks.findIndex((c) => decodeChunk(c, 't').firstIndex === 47);
    assert.ok(at47 > 0, 'a chunk starts where the first cycle ended');
    const chunk47 = decodeChunk(seg.chunks[at47] ?? new Uint8Array(0), 't');
    const forged = forgeRecord(seg.chunks[at47] ?? new Uint8Array(0), 0);
    assert.ok(forged.index >= 47 && forged.index < 47 + chunk47.count);
    const e1 = rejects(withSegment(bundle, 0, (s) => ({ ...s, chunks: s.chunks.map((c, i) => (i === at47 ? forged.chunk : c)) })), 'VERIFY_REPLAY', 'chunk-state', fresh());
    assert.equal(e1.details.chunk, 47);
    // A record whose digest does not match its data.
    const badDigest = withSegment(bundle, 0, (s) => ({
      ...s,
      chunks: s.chunks.map((c, i) => {
        if (i !== at47) return c;
        const chunk = decodeChunk(c, 't');
        const records = Uint8Array.from(chunk.records);
        records[4 + 5] = (records[4 + 5] ?? 0) ^ 1; // first record's SHA-1 digest
        return encodeChunk({ ...chunk, records });
      }),
    }));
    const e2 = rejects(badDigest, 'VERIFY_REPLAY', 'record-digest', fresh());
    assert.equal(e2.details.index, 47);
    // A chunk dropped.
    rejects(withSegment(bundle, 0, (s) => ({ ...s, chunks: s.chunks.filter((_, i) => i !== at47) })), 'VERIFY_CHAIN_GAP', 'chunk-index', fresh());
    // A checkpoint dropped: the next one's nonce does not chain.
    const e3 = rejects(withSegment(bundle, 0, (s) => ({ ...s, checkpoints: s.checkpoints.filter((_, i) => i !== 0) })), 'VERIFY_NONCE_CHAIN', 'nonce-chain', fresh());
    assert.equal(e3.details.checkpoint, decodeCheckpoint(seg.checkpoints[1] ?? new Uint8Array(0), 't').count);
    // A checkpoint's signature changed.
    const resigned = withSegment(bundle, 0, (s) => ({
      ...s,
      checkpoints: s.checkpoints.map((c, i) => {
        if (i !== 1) return c;
        const cp = decodeCheckpoint(c, 't');
        const signature = Uint8Array.from(cp.signature);
        signature[signature.length - 1] = (signature[signature.length - 1] ?? 0) ^ 1;
        return encodeCheckpoint({ ...cp, signature });
      }),
    }));
    const e4 = rejects(resigned, 'VERIFY_SIGNATURE', 'quote', fresh());
    assert.equal(e4.details.causeCode, 'QUOTE_BAD_SIGNATURE');
    // Quoted PCR values that are not the replay (a checkpoint claiming fewer records).
    const shifted = withSegment(bundle, 0, (s) => ({
      ...s,
      checkpoints: s.checkpoints.map((c, i) => (i === 0 ? encodeCheckpoint({ ...decodeCheckpoint(c, 't'), count: decodeCheckpoint(c, 't').count - 1 }) : c)),
    }));
    rejects(shifted, 'VERIFY_REPLAY', 'checkpoint-replay', fresh());
    // The boot's resetCount is bound to the quotes.
    rejects(withSegment(bundle, 0, (s) => ({ ...s, info: { ...s.info, resetCount: 9 } })), 'VERIFY_CLOCK_ORDER', 'reset-count', fresh());
    // The kernel boot id is bound to the boot's first nonce.
    rejects(withSegment(bundle, 0, (s) => ({ ...s, info: { ...s.info, kernelBootId: 'another-boot' } })), 'VERIFY_NONCE_CHAIN', 'nonce-chain', fresh());
    // Another AK than the trusted one.
    const otherAk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    rejects(bytes, 'VERIFY_AK', 'ak-trusted', new EvidenceVerifier({ trustedAk: otherAk }));
  });

  it('clock order: reset and restart counts never go back, the clock advances, safe is set', () => {
    const at = (clock: bigint, resetCount = 1, restartCount = 0, safe = true) => ({ clock, resetCount, restartCount, safe });
    assert.equal(clockOrderViolation(at(10n), at(11n)), null);
    assert.equal(clockOrderViolation(at(10n, 1), at(5n, 2)), 'clock did not advance: 10 then 5');
    assert.match(clockOrderViolation(at(10n, 2), at(11n, 1)) ?? '', /resetCount went back/);
    assert.match(clockOrderViolation(at(10n, 1, 3), at(11n, 1, 2)) ?? '', /restartCount went back/);
    assert.match(clockOrderViolation(at(10n), at(11n, 1, 0, false)) ?? '', /not safe/);
  });
});
