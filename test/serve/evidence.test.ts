/**
 * Evidence sync across cuts: a client pulls bundles while the device keeps cycling (and reboots
 * once); each transfer is cut at a random point with probability 1/2 and retried from the same
 * cursor. At the end every record the store exported arrived exactly once, in order, and the
 * bundles verify in sequence. Also: cursor errors.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mulberry32 } from '../../src/testing/index.js';
import { decodeChunk } from '../../src/store/index.js';
import { decodeBundle } from '../../src/serve/index.js';
import { publicKeyFromTpm2b } from '../../src/tpm/index.js';
import { EvidenceVerifier } from '../../src/verify/index.js';
import type { CollectedDevice } from './_collected.js';
import { errorCode, get, getCut, type Target } from './_http.js';
import { ServedDevice } from './_served.js';

/** Seeded numbers in [0, 1): the cut points are the same on every run. */
function random(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 0x1_0000_0000;
}

describe('evidence sync', () => {
  let served: ServedDevice;
  let device: CollectedDevice;
  let target: Target;

  before(async () => {
    served = await ServedDevice.start('evidence', { chunkRecords: 25 });
    device = served.device;
    ({ target } = await served.serve());
  });

  after(async () => {
    await served?.close();
  });

  it('cut at random points and resumed: no gap, no duplicate, verifies', async () => {
    const rand = random(20261122);
    const verifier = new EvidenceVerifier({ trustedAk: publicKeyFromTpm2b((await device.ak()).public) });
    const received = new Map<number, number[]>(); // boot -> first indexes of chunks received
    let cursor: string | undefined;
    let cuts = 0;
    let bundles = 0;
    for (let step = 0; step < 60; step++) {
      if (step % 4 === 0 && step < 48) await device.cycle(20 + Math.floor(rand() * 60));
      if (step === 24) await device.reboot();
      const path = `/v1/evidence?max_bytes=9000${cursor === undefined ? '' : `&since=${cursor}`}`;
      const whole = await get(target, path);
      assert.equal(whole.status, 200);
      if (rand() < 0.5 && whole.body.length > 1) {
        // The same request, cut: what arrived does not decode, the cursor does not move.
        const cut = await getCut(target, path, 1 + Math.floor(rand() * (whole.body.length - 1)));
        assert.ok(cut.length < whole.body.length);
        assert.throws(() => decodeBundle(cut), { code: 'STORE_CORRUPT' });
        cuts++;
        continue;
      }
      const bundle = decodeBundle(whole.body);
      verifier.verify(whole.body);
      bundles++;
      for (const segment of bundle.segments) {
        const list = received.get(segment.boot) ?? [];
        for (const bytes of segment.chunks) list.push(decodeChunk(bytes, 'received').firstIndex);
        received.set(segment.boot, list);
      }
      cursor = String(whole.headers['x-imakeep-next-cursor']);
    }
    assert.ok(cuts > 10 && bundles > 10, `${cuts} cuts, ${bundles} bundles`);
    for (const [boot, firsts] of received) {
      assert.deepEqual(firsts, [...new Set(firsts)].sort((a, b) => a - b), `boot ${boot}: chunks in order, once`);
      const chunks: number[] = [];
      for await (const c of device.store.chunks(boot)) chunks.push(c.chunk.firstIndex);
      assert.deepEqual(firsts, chunks.slice(0, firsts.length), `boot ${boot}: no gap`);
    }
    // Boot 0 is finished: all of it arrived.
    let boot0 = 0;
    for await (const _ of device.store.chunks(0)) boot0++;
    assert.equal(received.get(0)?.length, boot0);
  });

  it('bad, unknown and misplaced cursors: 400/404-class JSON errors', async () => {
    // An index inside a stored chunk is no cursor: cursors name chunk boundaries.
    let inside: string | undefined;
    for await (const { chunk } of device.store.chunks(0)) {
      if (chunk.count > 1) {
        inside = `0.${chunk.firstIndex + 1}.0`;
        break;
      }
    }
    assert.ok(inside !== undefined, 'boot 0 has a chunk of more than one record');
    for (const [since, code] of [
      ['x', 'SERVE_BAD_CURSOR'],
      ['1.2', 'SERVE_BAD_CURSOR'],
      ['-1.0.0', 'SERVE_BAD_CURSOR'],
      ['0.99999999.0', 'SERVE_BAD_CURSOR'],
      [inside, 'SERVE_BAD_CURSOR'],
      ['77.0.0', 'SERVE_BAD_CURSOR'],
    ] as const) {
      const reply = await get(target, `/v1/evidence?since=${since}`);
      assert.equal(reply.status, 400, since);
      assert.equal(errorCode(reply), code, since);
    }
    const zero = await get(target, '/v1/evidence?max_bytes=0');
    assert.equal(zero.status, 400);
  });
});
