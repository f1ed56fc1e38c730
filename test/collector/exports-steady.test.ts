/**
 * Issue 13's export gap: under constant appends, evidence bundles reach every record the collector
 * stored. Bundles of a boot end at the anchor of a checkpoint sent with them (docs/store.md#nonce-chain,
 * serve/evidence.ts), so a cycle whose quote saw records past its anchor, or whose later drain
 * stored more, leaves records out of every export until a checkpoint is anchored at the stored
 * count; the collector takes such a further quote (collector/cycle.ts `attestStored`).
 *
 * Real parts throughout: the FUSE securityfs emulator extending a real swtpm, a real LevelDB store,
 * real quotes. The bundles are built by `buildBundle` and checked by the offline verifier with the
 * stored AK.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import type { Collector } from '../../src/collector/index.js';
import { buildBundle } from '../../src/serve/index.js';
import { publicKeyFromTpm2b } from '../../src/tpm/index.js';
import { EvidenceVerifier } from '../../src/verify/index.js';
import { quotesWith, startRig, type Rig } from './_rig.js';

const CYCLES = 8;

/**
 * The whole store exported from `0.0.0` and verified offline: the index the export reaches (0
 * while no checkpoint ends one: nothing is sent).
 */
async function exportedEnd(rig: Rig): Promise<number> {
  const built = await buildBundle(rig.store, undefined, { maxBytes: 64 * 1024 * 1024 });
  const akPublic = rig.store.meta.akPublic;
  if (built.bundle.segments.length === 0) {
    assert.equal(built.bundle.next.index, 0);
    return 0;
  }
  assert.ok(akPublic !== null, 'the AK public area is stored with the first checkpoint');
  const report = new EvidenceVerifier({ trustedAk: publicKeyFromTpm2b(akPublic) }).verify(built.bytes);
  const segment = report.segments.at(-1);
  assert.equal(segment?.binding, 'signed', 'every record sent is bound by a checkpoint sent');
  assert.equal(built.bundle.next.index, segment.to);
  return segment.to;
}

/** Runs CYCLES cycles; after each, the stored count and how far the export reaches. */
async function cyclesAndExports(rig: Rig, collector: Collector, pauseMs: number): Promise<{ stored: number; exported: number }[]> {
  const seen: { stored: number; exported: number }[] = [];
  for (let i = 0; i < CYCLES; i++) {
    await delay(pauseMs);
    const report = await collector.runOnce();
    seen.push({ stored: report.stored, exported: await exportedEnd(rig) });
  }
  return seen;
}

describe('exports under constant appends', () => {
  it('the kernel logs records during every quote: after each cycle the export reaches every stored record', async () => {
    const rig = await startRig({ seed: 43 });
    try {
      // The kernel logs (and extends) records while each quote is taken: they are read after the
      // cycle's quote, so the cycle's checkpoint is anchored before them. A decorator on the real
      // quoter makes that timing certain (no record is logged between a drain and a quote).
      const duringQuotes = quotesWith(rig.tpm, (tpm) => ({
        async quote(nonce, pcrs) {
          const quote = await tpm.quote(nonce, pcrs);
          await rig.append(7);
          return quote;
        },
      }));
      const collector = await rig.collector({}, duringQuotes);
      await rig.append(50);
      const seen = await cyclesAndExports(rig, collector, 0);
      await collector.close();
      for (const [i, { stored, exported }] of seen.entries()) assert.equal(exported, stored, `cycle ${i}: the export reaches all ${stored} stored records`);
      const last = seen.at(-1);
      assert.ok(last !== undefined && last.stored > 50 + 7 * CYCLES, `records of every quote were stored (${last?.stored})`);
    } finally {
      await rig.stop();
    }
  });

  it("a steady append rate, the cycles' own quotes only: every export verifies, ending at the anchor of a checkpoint it sends", async () => {
    const rig = await startRig({ seed: 47 });
    let feeding = true;
    let appended = 0;
    const feeder = (async () => {
      while (feeding) {
        appended += (await rig.append(10)).length;
        await delay(20);
      }
    })();
    try {
      // Without further quotes, most checkpoints have records past their anchor: an export must
      // not end at such an anchor (the records before it would be bound by no nonce sent).
      const collector = await rig.collector({ exportQuoteAttempts: 0 });
      const seen = await cyclesAndExports(rig, collector, 30);
      await collector.close();
      for (const [i, { exported }] of seen.entries()) {
        let ends = 0;
        for await (const c of rig.store.checkpoints(collector.boot, 0)) if (c.anchor === exported && c.count <= exported) ends++;
        assert.ok(exported === 0 || ends === 1, `cycle ${i}: the export ends at record ${exported}, the anchor of a checkpoint it sends`);
      }
      let pastAnchor = 0;
      for await (const c of rig.store.checkpoints(collector.boot, 0)) if (c.anchor !== undefined && c.count > c.anchor) pastAnchor++;
      assert.ok(pastAnchor > 0, 'some checkpoint has records past its anchor (else this test shows nothing)');
    } finally {
      feeding = false;
      await feeder;
      await rig.stop();
    }
    assert.ok(appended > 0);
  });
});
