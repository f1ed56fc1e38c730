/**
 * A verifier without state, given a bundle that starts mid-boot (docs/store.md#starting-mid-boot):
 * with the segment's `previous` (the quote of the boot's checkpoint before its first one) a single
 * checkpoint binds the whole segment; without it (bundles written before the field) the first
 * nonce binds nothing and a second checkpoint is needed. A false `previous` fails the nonce, and
 * one that contradicts the state a verifier carries fails the chain. Real collector evidence
 * (test/serve/_collected.ts).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildBundle } from '../../src/serve/index.js';
import { decodeBundle, encodeBundle, type BundleSegment, type DecodedBundle } from '../../src/store/index.js';
import type { KeyObject } from 'node:crypto';
import { publicKeyFromTpm2b } from '../../src/tpm/index.js';
import { EvidenceVerifier } from '../../src/verify/index.js';
import { CollectedDevice } from '../serve/_collected.js';
import { refusedWith } from './_mutants.js';

/** The bundle with its one segment changed. */
function withSegment(bundle: DecodedBundle, change: (s: BundleSegment) => BundleSegment): Uint8Array {
  assert.equal(bundle.segments.length, 1);
  return encodeBundle({ ...bundle, segments: bundle.segments.map(change) });
}

describe('a verifier without state, from a checkpoint mid-boot', () => {
  let device: CollectedDevice;
  let ak: KeyObject;
  /** From record 0 to the first cut; from there to the next cut (one checkpoint); from there to the end. */
  let head: Uint8Array;
  let one: Uint8Array;
  let rest: Uint8Array;
  const fresh = (): EvidenceVerifier => new EvidenceVerifier({ trustedAk: ak });

  before(async () => {
    device = await CollectedDevice.start({ seed: 13 });
    for (let cycle = 0; cycle < 5; cycle++) await device.cycle(120);
    await device.runOnce();
    const akPublic = device.store.meta.akPublic;
    assert.ok(akPublic !== null);
    ak = publicKeyFromTpm2b(akPublic);
    // A one-byte budget: each bundle reaches exactly one cut.
    const first = await buildBundle(device.store, undefined, { maxBytes: 1 });
    const second = await buildBundle(device.store, first.bundle.next, { maxBytes: 1 });
    head = first.bytes;
    one = second.bytes;
    rest = (await buildBundle(device.store, first.bundle.next, { maxBytes: 64 * 2 ** 20 })).bytes;
  });

  after(async () => {
    await device?.close();
  });

  it('one checkpoint binds the segment: the bundle states the quote its nonce chains from', () => {
    const bundle = decodeBundle(one);
    assert.ok(bundle.cursor.index > 0 && bundle.cursor.checkpoint > 0, JSON.stringify(bundle.cursor));
    assert.ok(bundle.segments[0]?.previous !== null);
    const report = fresh().verify(one);
    const segment = report.segments[0];
    assert.ok(segment !== undefined);
    assert.deepEqual([segment.start, segment.checkpoints.length, segment.binding, segment.unsigned], ['claimed', 1, 'signed', []]);
    assert.deepEqual([segment.from, segment.to], [bundle.cursor.index, bundle.next.index]);
  });

  it('without the previous quote (a bundle written before the field) one checkpoint binds nothing; two do', () => {
    const stripped = (bytes: Uint8Array): Uint8Array => withSegment(decodeBundle(bytes), (s) => ({ ...s, previous: null }));
    refusedWith(fresh(), stripped(one), 'VERIFY_UNSIGNED', 'unsigned-records');
    const report = fresh().verify(stripped(rest));
    const segment = report.segments[0];
    assert.ok(segment !== undefined && segment.checkpoints.length >= 2, JSON.stringify(segment?.checkpoints));
    assert.equal(segment.binding, 'signed');
  });

  it('a false previous quote fails the first nonce', () => {
    const forged = withSegment(decodeBundle(one), (s) => {
      assert.ok(s.previous !== null);
      const signature = Uint8Array.from(s.previous.signature);
      signature[signature.length - 1] = (signature[signature.length - 1] ?? 0) ^ 1;
      return { ...s, previous: { ...s.previous, signature } };
    });
    refusedWith(fresh(), forged, 'VERIFY_NONCE_CHAIN', 'nonce-chain');
  });

  it('with state carried the stated previous quote must be the one verified; at a boot start there is none', () => {
    const carrying = fresh();
    carrying.verify(head);
    const wrong = withSegment(decodeBundle(one), (s) => {
      assert.ok(s.previous !== null);
      return { ...s, previous: { attest: s.previous.attest, signature: Uint8Array.of(...s.previous.signature.subarray(1), 0) } };
    });
    refusedWith(carrying, wrong, 'VERIFY_CHAIN_GAP', 'segment-previous');
    // The state is unchanged by the refused bundle: the true one follows.
    assert.equal(carrying.verify(one).segments[0]?.start, 'state');
    const atStart = withSegment(decodeBundle(head), (s) => ({ ...s, previous: { attest: Uint8Array.of(1), signature: Uint8Array.of(2) } }));
    refusedWith(fresh(), atStart, 'VERIFY_CHAIN_GAP', 'segment-previous');
  });
});
