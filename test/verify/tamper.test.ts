/**
 * No single-byte change of a bundle goes unnoticed: flipping any byte (every offset, two bit
 * patterns) either fails verification with a VerifyError or changes what the verifier reports.
 * The second case is only allowed for the fields the TPM does not attest (device id, first-seen
 * time, template names: informational, shown in the report), and the test counts
 * it separately so that a regression that stops checking an attested field shows up.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildBundle } from '../../src/serve/index.js';
import { publicKeyFromTpm2b } from '../../src/tpm/index.js';
import { EvidenceVerifier, VerifyError } from '../../src/verify/index.js';
import { CollectedDevice } from '../serve/_collected.js';

describe('every byte of a bundle is covered', () => {
  let device: CollectedDevice;
  let work: string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'imakeep-tamper-'));
    device = await CollectedDevice.start({ chunkRecords: 5, template: 'ima-ng' });
    await device.cycle(8);
    await device.cycle(4);
  });

  after(async () => {
    await device?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('each of the bundle bytes, flipped (xor 0x01 and xor 0x80), is detected or visible in the report', async () => {
    const { bytes } = await buildBundle(device.store);
    const ak = publicKeyFromTpm2b((await device.ak()).public);
    const verifier = (): EvidenceVerifier => new EvidenceVerifier({ trustedAk: ak });
    const original = JSON.stringify(verifier().verify(bytes));
    const outcomes = new Map<string, number>();
    const unnoticed: number[] = [];
    let visible = 0;
    for (const mask of [0x01, 0x80]) {
      for (let at = 0; at < bytes.length; at++) {
        const changed = Uint8Array.from(bytes);
        changed[at] = (changed[at] ?? 0) ^ mask;
        try {
          const report = JSON.stringify(verifier().verify(changed));
          if (report === original) unnoticed.push(at);
          else visible++;
        } catch (e) {
          assert.ok(e instanceof VerifyError, `offset ${at}: ${String(e)}`);
          outcomes.set(e.code, (outcomes.get(e.code) ?? 0) + 1);
        }
      }
    }
    assert.deepEqual(unnoticed, [], `unnoticed flips at offsets ${unnoticed.join(',')}`);
    const detected = [...outcomes.values()].reduce((a, b) => a + b, 0);
    // Informational fields are a few dozen bytes of a bundle of thousands.
    assert.ok(visible < 0.05 * 2 * bytes.length, `${visible} flips only visible in the report, of ${2 * bytes.length}`);
    assert.equal(detected + visible, 2 * bytes.length);
    for (const code of ['VERIFY_BUNDLE_CORRUPT', 'VERIFY_REPLAY', 'VERIFY_SIGNATURE', 'VERIFY_CHAIN_GAP', 'VERIFY_NONCE_CHAIN']) {
      assert.ok((outcomes.get(code) ?? 0) > 0, `no flip was caught as ${code}: ${JSON.stringify([...outcomes])}`);
    }
  });
});
