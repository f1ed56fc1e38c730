/**
 * The fleet service end to end over HTTP with real devices (swtpm, LevelDB store, chained quotes):
 * incremental verification from the kept state, the EAR acknowledgement and going on from it,
 * the device views and log, and each kind of bad bundle refused with its code, leaving the
 * device's verified state as it was.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUNDLE_FRAMES_TYPE, frameBundle, ImaWorkload } from '../../src/testing/index.js';
import { extendedDigest } from '../../src/ima/index.js';
import { decodeBundle, encodeBundle } from '../../src/serve/index.js';
import { decodeCheckpoint, encodeCheckpoint, nextCheckpointNonce } from '../../src/store/index.js';
import { encodePcrBlob, publicKeyFromTpm2b } from '../../src/tpm/index.js';
import { EvidenceVerifier, fleetKeyFromPem, verifyEarToken } from '../../src/verify/index.js';
import { formatRuntimePolicy, PolicyBuilder } from '../../src/policy/index.js';
import { CollectedDevice } from '../serve/_collected.js';
import { RIG_BANKS } from '../collector/_rig.js';
import { BACKENDS, type Backend } from './_backends.js';
import { bundleFrom, call, enrollDevice, errorOf, pushBundle, testFleet } from './_fleet.js';

type Running = Awaited<ReturnType<typeof testFleet>>;

/** The bundle with one bit of its first checkpoint's signature flipped. */
function withAlteredSignature(bytes: Uint8Array): Uint8Array {
  const bundle = decodeBundle(bytes);
  const seg = bundle.segments[0];
  assert.ok(seg !== undefined);
  const cp = decodeCheckpoint(seg.checkpoints[0] ?? new Uint8Array(), 'cp');
  const signature = Uint8Array.from(cp.signature);
  signature[signature.length - 3] = (signature[signature.length - 3] ?? 0) ^ 0x40;
  return encodeBundle({ ...bundle, segments: [{ ...seg, checkpoints: [encodeCheckpoint({ ...cp, signature })] }] });
}

function serviceSuite(make: () => Promise<Backend>): void {
  let backend: Backend;
  let running: Running;
  let url: string;
  let alice: CollectedDevice;
  let bob: CollectedDevice;

  before(async () => {
    backend = await make();
    running = await testFleet(await backend.fleetDatabase());
    url = running.url;
    alice = await CollectedDevice.start({ chunkRecords: 10 });
    bob = await CollectedDevice.start({ chunkRecords: 10, seed: 99 });
    await enrollDevice(running.fleet, 'alice', alice);
    await enrollDevice(running.fleet, 'bob', bob);
  });

  after(async () => {
    await running?.stop();
    await alice?.close();
    await bob?.close();
    await backend?.stop();
  });

  const view = async (id: string): Promise<Record<string, unknown>> => (await call(url, `/v1/devices/${id}`)).body;
  /** The view less its freshness quote's age, which moves with the wall clock alone. */
  const held = async (id: string): Promise<Record<string, unknown>> => {
    const v = await view(id);
    const freshness = v.freshness as Record<string, unknown> | null;
    return { ...v, freshness: freshness === null ? null : { ...freshness, ageSeconds: 'the wall clock' } };
  };

  it('accepts bundles incrementally and acknowledges each with an EAR token that verifies with the fleet key', async () => {
    await alice.cycle(25);
    const first = await bundleFrom(alice);
    const r1 = await pushBundle(url, 'alice', first.bytes);
    assert.equal(r1.status, 200, JSON.stringify(r1.body));
    assert.equal(r1.body.cursor, first.next);
    assert.equal(r1.body.records, 25);
    assert.equal(r1.body.seq, 1);
    assert.equal(r1.body.verdict, 'pass');
    await alice.cycle(17);
    const second = await bundleFrom(alice, first.next);
    const r2 = await pushBundle(url, 'alice', second.bytes);
    assert.equal(r2.status, 200, JSON.stringify(r2.body));
    assert.equal(r2.body.records, 17);
    assert.equal(r2.body.cursor, second.next);
    const key = fleetKeyFromPem(await (await fetch(`${url}/v1/key`)).text());
    const token = verifyEarToken(String(r2.body.token), key);
    assert.equal(token.deviceId, 'alice');
    assert.equal(token.status, 'warning'); // verified, no policy judged it
    assert.equal(token.recordsVerified, 42);
    assert.equal(token.seq, 2);
    assert.equal(token.verified.cursor, second.next);
    assert.equal(token.verified.recordCount, 42);
    const v = await view('alice');
    assert.deepEqual(v.verifiedUpTo, { cursor: second.next, boot: 0, index: 42, records: 42 });
    assert.equal(v.verdict, 'pass');
    assert.equal(v.acknowledgements, 2);
    assert.equal(typeof v.lastSeen, 'string');
    const ack = await call(url, '/v1/devices/alice/ack');
    assert.equal(ack.body.token, r2.body.token);
  });

  it('a verifier holding only the token checks the rest of the log from there (verify --from-token)', async () => {
    const ack = await call(url, '/v1/devices/alice/ack');
    const key = fleetKeyFromPem(await (await fetch(`${url}/v1/key`)).text());
    const token = verifyEarToken(String(ack.body.token), key);
    await alice.cycle(8);
    const rest = await bundleFrom(alice, token.verified.cursor);
    const verifier = new EvidenceVerifier({ trustedAk: publicKeyFromTpm2b((await alice.ak()).public), state: token.state });
    const report = verifier.verify(rest.bytes);
    assert.deepEqual(report.segments.map((s) => [s.start, s.from, s.to]), [['state', 42, 50]]);
    // The same rest with one record changed fails from the token's state: the token carries the PCRs.
    const forged = token.state.replay.banks.map((b) => ({ ...b, pcrs: b.pcrs.map((p) => ({ ...p, value: p.value.map((x) => x ^ 1) })) }));
    const wrong = new EvidenceVerifier({ trustedAk: publicKeyFromTpm2b((await alice.ak()).public), state: { ...token.state, replay: { ...token.state.replay, banks: forged } } });
    assert.throws(() => wrong.verify(rest.bytes), { code: 'VERIFY_REPLAY' });
    assert.equal((await pushBundle(url, 'alice', rest.bytes)).status, 200);
  });

  it('a repeated bundle is FLEET_REPLAYED with the cursor to resume at; nothing counted twice', async () => {
    const before = await view('alice');
    const again = await bundleFrom(alice, '0.0.0', 400);
    const r = await pushBundle(url, 'alice', again.bytes);
    assert.equal(r.status, 409);
    const e = errorOf(r);
    assert.equal(e.code, 'FLEET_REPLAYED');
    assert.equal(e.details.cursor, (before.verifiedUpTo as { cursor: string }).cursor);
    assert.deepEqual(await view('alice'), { ...before, lastSeen: before.lastSeen });
  });

  it('a bundle that starts past the verified end (a gap, or bundles out of order) is FLEET_GAP', async () => {
    const end = ((await view('alice')).verifiedUpTo as { cursor: string }).cursor;
    await alice.cycle(10);
    const b1 = await bundleFrom(alice, end);
    await alice.cycle(10);
    const b2 = await bundleFrom(alice, b1.next);
    const r = await pushBundle(url, 'alice', b2.bytes);
    assert.equal(r.status, 409);
    assert.equal(errorOf(r).code, 'FLEET_GAP');
    assert.equal(errorOf(r).details.cursor, end);
    assert.equal(errorOf(r).details.got, b1.next);
    assert.equal((await pushBundle(url, 'alice', b1.bytes)).status, 200);
    assert.equal((await pushBundle(url, 'alice', b2.bytes)).status, 200);
  });

  it('other bytes for positions already verified are FLEET_FORK naming the chunk', async () => {
    const old = await bundleFrom(alice, '0.0.0', 400);
    const bundle = decodeBundle(old.bytes);
    const seg = bundle.segments[0];
    assert.ok(seg !== undefined);
    const chunk0 = seg.chunks[0];
    assert.ok(chunk0 !== undefined);
    const changed = Uint8Array.from(chunk0);
    changed[changed.length - 1] = (changed[changed.length - 1] ?? 0) ^ 1;
    const forked = encodeBundle({ ...bundle, segments: [{ ...seg, chunks: [changed, ...seg.chunks.slice(1)] }] });
    const r = await pushBundle(url, 'alice', forked);
    assert.equal(r.status, 409);
    assert.deepEqual([errorOf(r).code, errorOf(r).details.boot, errorOf(r).details.index], ['FLEET_FORK', 0, 0]);
  });

  it("a bundle under another device's AK is FLEET_WRONG_AK", async () => {
    await bob.cycle(12);
    const r = await pushBundle(url, 'alice', (await bundleFrom(bob)).bytes);
    assert.equal(r.status, 403);
    assert.equal(errorOf(r).code, 'FLEET_WRONG_AK');
  });

  it('a checkpoint whose signature was altered is FLEET_FORGED naming the checkpoint; the state stays', async () => {
    const first = await bundleFrom(bob);
    const r = await pushBundle(url, 'bob', withAlteredSignature(first.bytes));
    assert.equal(r.status, 422);
    assert.deepEqual([errorOf(r).code, errorOf(r).details.checkpoint, errorOf(r).details.causeCode], ['FLEET_FORGED', 12, 'VERIFY_SIGNATURE']);
    assert.equal((await view('bob')).verifiedUpTo, null);
    assert.equal((await pushBundle(url, 'bob', first.bytes)).status, 200);
  });

  it('an unknown device is 404 FLEET_UNKNOWN_DEVICE; a refused one 403 FLEET_NOT_ENROLLED', async () => {
    const bytes = (await bundleFrom(bob)).bytes;
    const r = await pushBundle(url, 'nobody', bytes);
    assert.deepEqual([r.status, errorOf(r).code], [404, 'FLEET_UNKNOWN_DEVICE']);
    await running.fleet.service.enroll('mallory', { enrollment: 'refused', akPublic: (await bob.ak()).public });
    const m = await pushBundle(url, 'mallory', bytes);
    assert.deepEqual([m.status, errorOf(m).code], [403, 'FLEET_NOT_ENROLLED']);
  });

  it('serves the device log in kernel formats, equal to what the device measured', async () => {
    const res = await fetch(`${url}/v1/devices/alice/log?format=ascii&bank=sha256`);
    assert.equal(res.status, 200);
    const lines = (await res.text()).split('\n').filter((l) => l.length > 0);
    const count = Number(((await view('alice')).verifiedUpTo as { index: number }).index);
    assert.equal(lines.length, count);
    const direct = await fetch(`${url}/v1/devices/alice/log?from=${count - 3}`);
    assert.equal(direct.headers.get('x-imakeep-from'), String(count - 3));
    const bad = await call(url, '/v1/devices/alice/log?bank=sha999');
    assert.deepEqual([bad.status, errorOf(bad).code], [400, 'SERVE_BAD_PARAMETER']);
  });

  it('lists devices and serves metrics', async () => {
    const list = await call(url, '/v1/devices');
    const ids = (list.body.devices as { id: string }[]).map((d) => d.id);
    assert.deepEqual(ids, ['alice', 'bob', 'mallory']);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /^imakeep_fleet_devices 3$/m);
    assert.match(metrics, /^imakeep_fleet_bundles_accepted_total 6$/m);
  });

  it('freshness: a quote over the fleet nonce with the enrolled AK dates the verdict; another nonce is FLEET_STALE_QUOTE', async () => {
    const challenge = await call(url, '/v1/devices/bob/challenge', { method: 'POST', body: '' });
    const nonce = Buffer.from(String(challenge.body.nonce), 'hex');
    const quote = await bob.quoter.quoteAndRead(nonce, [{ bank: 'sha256', pcr: 10 }]);
    const answer = (q: typeof quote): string =>
      JSON.stringify({
        attest: Buffer.from(q.attest).toString('hex'),
        signature: Buffer.from(q.signature).toString('hex'),
        pcrs: q.pcrs.map((p) => ({ bank: p.bank, pcr: p.pcr, value: Buffer.from(p.value).toString('hex') })),
      });
    const wrong = await bob.quoter.quoteAndRead(Buffer.alloc(32, 7), [{ bank: 'sha256', pcr: 10 }]);
    const stale = await call(url, '/v1/devices/bob/quote', { body: answer(wrong), type: 'application/json' });
    assert.deepEqual([stale.status, errorOf(stale).code], [422, 'FLEET_STALE_QUOTE']);
    const fresh = await call(url, '/v1/devices/bob/quote', { body: answer(quote), type: 'application/json' });
    assert.equal(fresh.status, 200, JSON.stringify(fresh.body));
    const v = await view('bob');
    assert.equal((v.freshness as { quotedAt: string }).quotedAt, fresh.body.freshAt);
    // The nonce is used up: the same answer again is stale.
    const replayed = await call(url, '/v1/devices/bob/quote', { body: answer(quote), type: 'application/json' });
    assert.equal(errorOf(replayed).code, 'FLEET_STALE_QUOTE');
  });

  it('judges each new record by the assigned runtime policy: affirming while all pass, then contraindicated naming the first failing records', async () => {
    const carol = await CollectedDevice.start({ chunkRecords: 10, seed: 5, template: 'ima-ng' });
    try {
      await carol.cycle(20);
      const builder = new PolicyBuilder();
      for (const record of carol.records()) builder.add(record);
      await running.fleet.service.enroll('carol', { enrollment: 'approved', akPublic: (await carol.ak()).public, policy: formatRuntimePolicy(builder.document()) });
      await assert.rejects(running.fleet.service.enroll('carol', { enrollment: 'approved', policy: '{"meta":' }), { code: 'POLICY_BAD_JSON' });
      const key = fleetKeyFromPem(running.fleet.service.publicKeyPem);
      const first = await bundleFrom(carol);
      const r1 = await pushBundle(url, 'carol', first.bytes);
      assert.equal(r1.status, 200, JSON.stringify(r1.body));
      assert.equal(verifyEarToken(String(r1.body.token), key).status, 'affirming');
      await carol.cycle(6); // files the policy does not know
      const r2 = await pushBundle(url, 'carol', (await bundleFrom(carol, first.next)).bytes);
      assert.equal(r2.status, 200);
      assert.equal(r2.body.verdict, 'fail');
      assert.equal(verifyEarToken(String(r2.body.token), key).status, 'contraindicated');
      const v = await view('carol');
      assert.equal(v.verdict, 'fail');
      const failures = v.failures as { boot: number; index: number; path: string; reason: string }[];
      assert.ok(failures.length > 0 && failures.length <= 6);
      assert.deepEqual(failures.map((f) => f.boot), failures.map(() => 0));
      assert.ok(failures.every((f) => f.index >= 20 && f.index < 26 && f.path.length > 0 && f.reason.length > 0), JSON.stringify(failures));
    } finally {
      await carol.close();
    }
  });

  it('imakeep verify --from-token checks the rest of the log with the fleet key; another key is VERIFY_TOKEN', async () => {
    const ack = await call(url, '/v1/devices/alice/ack');
    const token = String(ack.body.token);
    const from = String(ack.body.cursor);
    await alice.cycle(5);
    const rest = await bundleFrom(alice, from);
    const dir = running.data;
    const files = { bundle: join(dir, 'rest.cbor'), key: join(dir, 'fleet.pem'), other: join(dir, 'other.pem'), ak: join(dir, 'ak.pem') };
    writeFileSync(files.bundle, rest.bytes);
    writeFileSync(files.key, running.fleet.service.publicKeyPem);
    writeFileSync(files.other, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(files.ak, publicKeyFromTpm2b((await alice.ak()).public).export({ type: 'spki', format: 'pem' }));
    // Asynchronously: the fleet runs in this process, and a blocked event loop would stall it.
    const cli = async (key: string, ...more: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> => {
      const child = spawn(process.execPath, ['dist/src/cli.js', 'verify', files.bundle, '--ak', files.ak, '--from-token', token, '--fleet-key', key, ...more]);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const [status] = (await once(child, 'close')) as [number | null];
      return { status, stdout, stderr };
    };
    const ok = await cli(files.key, '--json');
    assert.equal(ok.status, 0, String(ok.stderr));
    const out = JSON.parse(String(ok.stdout)) as { bundles: { segments: { start: string; from: number }[] }[] };
    assert.deepEqual(out.bundles[0]?.segments.map((s) => [s.start, s.from]), [['state', Number(from.split('.')[1])]]);
    const bad = await cli(files.other);
    assert.equal(bad.status, 1);
    assert.match(String(bad.stderr), /^imakeep: VERIFY_TOKEN: /);
  });

  it('an older bundle after a newer acknowledgement (a device rolled back) is FLEET_REPLAYED naming the newer cursor; nothing moves', async () => {
    const start = ((await view('alice')).verifiedUpTo as { cursor: string }).cursor;
    await alice.cycle(10);
    const older = await bundleFrom(alice, start);
    assert.equal((await pushBundle(url, 'alice', older.bytes)).status, 200);
    await alice.cycle(10);
    const newer = await bundleFrom(alice, older.next);
    const ack = await pushBundle(url, 'alice', newer.bytes);
    assert.equal(ack.status, 200);
    const before = await view('alice');
    const r = await pushBundle(url, 'alice', older.bytes);
    assert.equal(r.status, 409);
    assert.deepEqual([errorOf(r).code, errorOf(r).details.cursor, errorOf(r).details.got], ['FLEET_REPLAYED', newer.next, start]);
    assert.deepEqual(await view('alice'), before);
    assert.equal((await call(url, '/v1/devices/alice/ack')).body.token, ack.body.token);
  });

  it('a multi-bundle body commits bundle by bundle: the first bad one is refused by number, those before it stay acknowledged', async () => {
    const start = ((await view('alice')).verifiedUpTo as { cursor: string }).cursor;
    const records = ((await view('alice')).verifiedUpTo as { records: number }).records;
    const bundles = [];
    for (let i = 0, from = start; i < 3; i++) {
      await alice.cycle(10);
      const b = await bundleFrom(alice, from);
      bundles.push(b);
      from = b.next;
    }
    const [b1, b2, b3] = bundles as [(typeof bundles)[0], (typeof bundles)[0], (typeof bundles)[0]];
    const forged = withAlteredSignature(b2.bytes);
    const frames = (...parts: Uint8Array[]): Uint8Array => Buffer.concat(parts.map((p) => frameBundle(p)));
    // Two bundles in one application/cbor body are not one bundle: refused whole.
    const glued = await call(url, '/v1/devices/alice/evidence', { body: Buffer.concat([b1.bytes, b2.bytes]), type: 'application/cbor' });
    assert.deepEqual([glued.status, errorOf(glued).code], [400, 'FLEET_BUNDLE_CORRUPT']);
    assert.equal(((await view('alice')).verifiedUpTo as { cursor: string }).cursor, start);
    const r = await call(url, '/v1/devices/alice/evidence', { body: frames(b1.bytes, forged, b3.bytes), type: BUNDLE_FRAMES_TYPE });
    assert.equal(r.status, 422);
    assert.deepEqual([errorOf(r).code, errorOf(r).details.bundle, errorOf(r).details.cursor, errorOf(r).details.causeCode], ['FLEET_FORGED', 1, b1.next, 'VERIFY_SIGNATURE']);
    const index = (cursor: string): number => Number(cursor.split('.')[1]);
    assert.deepEqual((await view('alice')).verifiedUpTo, { cursor: b1.next, boot: 0, index: index(b1.next), records: records + index(b1.next) - index(start) });
    const rest = await call(url, '/v1/devices/alice/evidence', { body: frames(b2.bytes, b3.bytes), type: BUNDLE_FRAMES_TYPE });
    assert.equal(rest.status, 200, JSON.stringify(rest.body));
    assert.deepEqual([rest.body.bundles, rest.body.records, rest.body.cursor], [2, 20, b3.next]);
    assert.equal(((await view('alice')).verifiedUpTo as { records: number }).records, records + index(b3.next) - index(start));
  });

  it('a device that hid a removal (records gone from its list between checkpoints, without evidence) is FLEET_LOG_MISMATCH at the checkpoint', async () => {
    const before = await held('bob');
    const start = (before.verifiedUpTo as { cursor: string; index: number }).cursor;
    const at = (before.verifiedUpTo as { index: number }).index;
    // A device that hides records, made from the real collector's output (it never writes this):
    // three of ten measured records are extended into PCR 10 but gone from the list before the
    // collector read it, and no removal was journaled. The collector stores the seven, quotes with
    // the nonce that binds them, finds the quote does not match (QUOTE_MISMATCH) and stores no
    // checkpoint; the device stores one anyway, over its seven records, with that real quote.
    await bob.measure(4);
    for (const record of new ImaWorkload({ seed: 4, template: 'ima-ng' }).records(3)) {
      await bob.tpm.pcrExtend(10, { sha1: extendedDigest(record, 'sha1'), sha256: extendedDigest(record, 'sha256') });
    }
    await bob.measure(3);
    const quoted = bob.nextQuote();
    await assert.rejects(bob.runOnce(), { code: 'QUOTE_MISMATCH' });
    const { nonce, quote } = await quoted;
    const last = await bob.store.lastCheckpoint(0);
    const { nonce: chained, anchor } = await nextCheckpointNonce(bob.store, 0, last ?? undefined);
    assert.deepEqual([Buffer.from(chained).toString('hex'), anchor], [Buffer.from(nonce).toString('hex'), at + 7]);
    const pcrs = await bob.quoter.readPcrs(RIG_BANKS.map((bank) => ({ bank, pcr: 10 })));
    await bob.store.storeCheckpoint(0, { count: at + 7, pcrs, attest: quote.attest, signature: quote.signature, akName: quote.akName, nonce, pcrBlob: encodePcrBlob(pcrs), anchor });
    const hidden = await bundleFrom(bob, start);
    const r = await pushBundle(url, 'bob', hidden.bytes);
    assert.equal(r.status, 422);
    assert.deepEqual([errorOf(r).code, errorOf(r).details.checkpoint, errorOf(r).details.causeCode, errorOf(r).details.cursor], ['FLEET_LOG_MISMATCH', at + 7, 'VERIFY_REPLAY', start]);
    assert.deepEqual(await held('bob'), before);
  });
}

for (const [name, make] of BACKENDS) {
  describe(`fleet service on ${name} with real devices`, () => serviceSuite(make));
}
