/**
 * The device id ties evidence to an enrollment: the collector adopts it in a store without
 * checkpoints (and refuses to change it later), every version-2 nonce binds it, and a verifier
 * held to an enrolled device id (`imakeep verify --enrollment`) refuses a bundle from another
 * device even when the enrolled AK signed it. Two stores on one real TPM (swtpm, the FUSE
 * securityfs emulator, the real collector): the same AK quotes for both.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { encodeEnrollmentRecord } from '../../src/enroll/index.js';
import { buildBundle } from '../../src/serve/index.js';
import { decodeBundle, encodeBundle, openStore, type ImaStore } from '../../src/store/index.js';
import { parseTpm2bPublic, publicKeyFromTpm2b, tpmName } from '../../src/tpm/index.js';
import { EvidenceVerifier } from '../../src/verify/index.js';
import { startRig, type Rig } from '../collector/_rig.js';
import { refusedWith } from './_mutants.js';

const CLI = join(process.cwd(), 'dist', 'src', 'cli.js');

/** Runs the collector twice on `store` (device id `deviceId` when given) and exports the store as one bundle. */
async function collectInto(rig: Rig, store: ImaStore, deviceId: string | undefined): Promise<Uint8Array> {
  const collector = await rig.collector({ store, flavor: 'none', ...(deviceId === undefined ? {} : { deviceId }) });
  try {
    await collector.runOnce();
    await collector.runOnce();
  } finally {
    await collector.close();
  }
  return (await buildBundle(store, undefined, { maxBytes: 16 * 2 ** 20 })).bytes;
}

describe('the device id binds evidence to its enrollment', () => {
  let rig: Rig;
  let other: ImaStore;
  let anonymous: ImaStore;
  let ak: KeyObject;
  let akPublic: Uint8Array;
  const bundles: Record<'a' | 'b' | 'none', Uint8Array> = { a: new Uint8Array(0), b: new Uint8Array(0), none: new Uint8Array(0) };

  before(async () => {
    rig = await startRig({ seed: 31 });
    await rig.append(150);
    // Flavour none: the kernel list stays whole, so each store collects it from record 0.
    bundles.a = await collectInto(rig, rig.store, 'gw-a');
    other = await openStore(join(rig.work, 'store-b'));
    bundles.b = await collectInto(rig, other, 'gw-b');
    anonymous = await openStore(join(rig.work, 'store-none'));
    bundles.none = await collectInto(rig, anonymous, undefined);
    const stored = rig.store.meta.akPublic;
    assert.ok(stored !== null);
    akPublic = stored;
    ak = publicKeyFromTpm2b(akPublic);
  });

  after(async () => {
    await other?.close();
    await anonymous?.close();
    await rig?.stop();
  });

  it('each store states its device id; one TPM, one AK signs all three', () => {
    assert.deepEqual(
      [bundles.a, bundles.b, bundles.none].map((b) => decodeBundle(b).deviceId),
      ['gw-a', 'gw-b', null],
    );
    assert.deepEqual([other.meta.akPublic, anonymous.meta.akPublic], [akPublic, akPublic]);
    for (const b of [bundles.a, bundles.b, bundles.none]) {
      const report = new EvidenceVerifier({ trustedAk: ak }).verify(b);
      assert.ok(report.segments.length === 1 && report.segments[0]?.binding === 'signed' && (report.segments[0]?.checkpoints.length ?? 0) > 0);
    }
  });

  it('held to device gw-a: its bundle verifies; gw-b\'s and a store\'s without an id are refused, though the enrolled AK signed them', () => {
    const report = new EvidenceVerifier({ trustedAk: ak, deviceId: 'gw-a' }).verify(bundles.a);
    assert.equal(report.deviceId, 'gw-a');
    const wrong = refusedWith(new EvidenceVerifier({ trustedAk: ak, deviceId: 'gw-a' }), bundles.b, 'VERIFY_DEVICE_MISMATCH', 'device-id');
    assert.deepEqual([wrong.details.expected, wrong.details.got], ['gw-a', 'gw-b']);
    const none = refusedWith(new EvidenceVerifier({ trustedAk: ak, deviceId: 'gw-a' }), bundles.none, 'VERIFY_DEVICE_MISMATCH', 'device-id');
    assert.deepEqual([none.details.expected, none.details.got], ['gw-a', 'null']);
  });

  it("gw-a's bundle relabelled gw-b fails gw-b's verifier on the nonce chain: the id is signed", () => {
    const relabelled = encodeBundle({ ...decodeBundle(bundles.a), deviceId: 'gw-b' });
    refusedWith(new EvidenceVerifier({ trustedAk: ak, deviceId: 'gw-b' }), relabelled, 'VERIFY_NONCE_CHAIN', 'nonce-chain');
  });

  it('a store keeps its device id: another id, or one for a store checkpointed without, is refused (STORE_DEVICE_ID)', async () => {
    await assert.rejects(rig.collector({ flavor: 'none', deviceId: 'gw-b' }), { code: 'STORE_DEVICE_ID' });
    await assert.rejects(rig.collector({ store: anonymous, flavor: 'none', deviceId: 'gw-c' }), { code: 'STORE_DEVICE_ID' });
    assert.deepEqual([rig.store.meta.deviceId, anonymous.meta.deviceId], ['gw-a', null]);
  });

  it('imakeep verify --enrollment: the enrolled device\'s bundle verifies, another device\'s is refused with VERIFY_DEVICE_MISMATCH', () => {
    const record = join(rig.work, 'enrollment.json');
    // The record's EK fields do not matter here (test/enroll makes real ones): verify reads its AK and device id.
    writeFileSync(
      record,
      encodeEnrollmentRecord({
        deviceId: 'gw-a', kernelBootId: 'b', enrolledAt: new Date().toISOString(), challengeId: '00'.repeat(16),
        ekTemplate: 'L-1', ekPublic: new Uint8Array([1]), ekName: new Uint8Array([2]), ekCertificate: new Uint8Array([3]), ekCertificatePath: [],
        akPublic, akName: tpmName(parseTpm2bPublic(akPublic)), ak: { alg: 'ecc', hierarchy: 'endorsement' },
      }),
    );
    for (const name of ['a', 'b'] as const) writeFileSync(join(rig.work, `${name}.cbor`), bundles[name]);
    const ok = spawnSync(process.execPath, [CLI, 'verify', join(rig.work, 'a.cbor'), '--enrollment', record], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /; AK trusted \(pinned by --enrollment\)\n$/);
    const refused = spawnSync(process.execPath, [CLI, 'verify', join(rig.work, 'b.cbor'), '--enrollment', record, '--json'], { encoding: 'utf8' });
    assert.equal(refused.status, 1, refused.stderr);
    const out = JSON.parse(refused.stdout) as { ok: boolean; error: { code: string; details: { expected: string; got: string } } };
    assert.deepEqual([out.ok, out.error.code, out.error.details.expected, out.error.details.got], [false, 'VERIFY_DEVICE_MISMATCH', 'gw-a', 'gw-b']);
  });
});
