/**
 * Every single-byte mutant of a real bundle (three boots from the real collector, the FUSE
 * emulator and swtpm, three checkpoints each) fails `verify` with the AK pinned, with a
 * `VERIFY_*` code: no byte exempt. The bundle is small enough for every byte to be tried in CI
 * (a mutant costs a verify of the whole bundle, ~0.3 ms per 50 KB here); the default suite runs a
 * seeded sample of a larger one (≥ 2,000 records, ≥ 10 checkpoints: test/verify/mutation.test.ts).
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { collectEvidence, type Collected } from '../serve/_collected.js';
import { assertEveryMutantFails, mutationOffsets } from '../verify/_mutants.js';

let evidence: Collected;

before(async () => {
  evidence = await collectEvidence({ boots: 3, cycles: 3, records: 15 });
});

after(async () => {
  await evidence?.stop();
});

it('every byte of the bundle, mutated, fails verify with a VERIFY_* code', () => {
  const tally = assertEveryMutantFails(evidence.bundle, evidence.ak, mutationOffsets(evidence.bundle.length, 'all'));
  assert.equal(tally.tried, evidence.bundle.length);
  assert.equal(tally.detected, tally.tried);
  process.stdout.write(`# mutants: ${tally.tried} tried, ${tally.detected} detected ${JSON.stringify(tally.codes)}\n`);
});
