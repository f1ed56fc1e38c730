/**
 * Fault injection through the transport seam: real swtpm responses (fixtures) truncated, re-tagged,
 * resized; TPM error codes; retries. Every failure must be a typed error, never a crash.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CreatePrimary, Quote, Tpm, TpmError, TpmProtocolError } from '../../src/tpm/index.js';
import { ScriptedTransport, exchange, hex, unhex } from './_fixtures.js';
import { GetCapability, PcrRead, TpmWriter, writePcrSelections, decodeResponse } from '../../src/testing/index.js';

/** A TPM answering with a bare response code. */
const rcResponse = (rc: number): Uint8Array => unhex(`8001 0000000a ${rc.toString(16).padStart(8, '0')}`);

/** Each captured response, a summary of what it decodes to, and that summary. */
const cases: [label: string, cc: number, decode: (response: Uint8Array) => string, expected: string][] = [
  ['pcr-read', 0x17e, (b) => decodeResponse(PcrRead, b).digests.map((d) => d.length).join(','), '20,32'],
  ['get-capability-pcrs', 0x17a, (b) => JSON.stringify(decodeResponse(GetCapability, b)), JSON.stringify({
    moreData: false,
    capability: 'pcrs',
    selections: [4, 0xb, 0xc, 0xd].map((hashAlg) => ({ hashAlg, pcrs: Array.from({ length: 24 }, (_, i) => i) })),
  })],
  ['get-capability-handles', 0x17a, (b) => JSON.stringify(decodeResponse(GetCapability, b)), '{"moreData":false,"capability":"handles","handles":[2147483648]}'],
  ['create-primary-ecc', 0x131, (b) => { const r = decodeResponse(CreatePrimary, b); return `${r.handle.toString(16)} ${r.outPublic.length} ${r.name.length}`; }, '80000000 90 34'],
  ['create-primary-rsa', 0x131, (b) => { const r = decodeResponse(CreatePrimary, b); return `${r.handle.toString(16)} ${r.outPublic.length} ${r.name.length}`; }, '80000000 282 34'],
  ['quote-ecc', 0x158, (b) => { const r = decodeResponse(Quote, b); return `${hex(r.attest.subarray(0, 6))} ${r.signature.length}`; }, 'ff5443478018 72'],
  ['quote-rsa', 0x158, (b) => { const r = decodeResponse(Quote, b); return `${hex(r.attest.subarray(0, 6))} ${r.signature.length}`; }, 'ff5443478018 262'],
];

describe('malformed responses are TPM_BAD_RESPONSE, never a crash', () => {
  for (const [label, cc, decode, expected] of cases) {
    const { response } = exchange(label, cc);
    test(`${label}: the real response decodes`, () => {
      assert.equal(decode(response), expected);
    });
    test(`${label}: every truncation (header size field unchanged)`, () => {
      for (let n = 0; n < response.length; n++) {
        assert.throws(() => decode(response.subarray(0, n)), { code: 'TPM_BAD_RESPONSE' }, `cut at ${n}`);
      }
    });
    test(`${label}: every truncation with a consistent size field`, () => {
      // Harder case: the size field agrees with the shorter body, so the structure parsers must catch it.
      for (let n = 10; n < response.length; n++) {
        const cut = response.slice(0, n);
        new DataView(cut.buffer).setUint32(2, n);
        assert.throws(() => decode(cut), (e: unknown) => e instanceof TpmProtocolError && e.code === 'TPM_BAD_RESPONSE', `cut at ${n}`);
      }
    });
    test(`${label}: size field larger than the body, smaller than the header, wrong tag, trailing byte`, () => {
      const bigger = response.slice();
      new DataView(bigger.buffer).setUint32(2, response.length + 1);
      assert.throws(() => decode(bigger), { code: 'TPM_BAD_RESPONSE' });
      const tiny = response.slice();
      new DataView(tiny.buffer).setUint32(2, 6);
      assert.throws(() => decode(tiny), { code: 'TPM_BAD_RESPONSE' });
      const tagged = response.slice();
      new DataView(tagged.buffer).setUint16(0, 0x00c4); // the TPM 1.2 response tag
      assert.throws(() => decode(tagged), { code: 'TPM_BAD_RESPONSE', offset: 0 });
      const sessionsSwapped = response.slice();
      new DataView(sessionsSwapped.buffer).setUint16(0, sessionsSwapped[1] === 0x01 ? 0x8002 : 0x8001);
      assert.throws(() => decode(sessionsSwapped), { code: 'TPM_BAD_RESPONSE' });
      const longer = new Uint8Array(response.length + 1);
      longer.set(response);
      new DataView(longer.buffer).setUint32(2, longer.length);
      assert.throws(() => decode(longer), { code: 'TPM_BAD_RESPONSE' });
    });
  }

  test('a hostile handle count cannot allocate past the response', () => {
    // GetCapability(HANDLES) claiming 0x40000000 handles in a 23-byte response.
    const hostile = unhex('8001 00000017 00000000 00 00000001 40000000 80000000');
    assert.throws(() => decodeResponse(GetCapability, hostile), { code: 'TPM_BAD_RESPONSE' });
  });

  test('the high-level API surfaces the same typed errors', async () => {
    const tpm = new Tpm(new ScriptedTransport([unhex('8001 0000000a')]));
    await assert.rejects(tpm.pcrRead([{ bank: 'sha256', pcr: 10 }]), { code: 'TPM_BAD_RESPONSE' });
  });
});

describe('TPM response codes', () => {
  test('an error response becomes TpmError with rc, name and parameter', async () => {
    const tpm = new Tpm(new ScriptedTransport([rcResponse(0x1c4)]));
    const err = await tpm.getRandom(8).then(
      () => assert.fail('expected a TpmError'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof TpmError);
    assert.equal(err.code, 'TPM_RC_VALUE');
    assert.equal(err.rc, 0x1c4);
    assert.equal(err.command, 'TPM2_GetRandom');
    assert.equal(err.decoded.parameter, 1);
    assert.equal(err.retryable, false);
  });

  test('TPM_RC_RETRY, YIELDED and TESTING are retried, then the command succeeds', async () => {
    const random = exchange('get-random').response;
    const transport = new ScriptedTransport([rcResponse(0x922), rcResponse(0x908), rcResponse(0x90a), random]);
    const tpm = new Tpm(transport, { retryDelayMs: 1 });
    const bytes = await tpm.getRandom(16);
    assert.equal(bytes.length, 16);
    assert.equal(hex(bytes), hex(random.subarray(12)));
    assert.equal(transport.sent.length, 4);
  });

  test('retries are bounded', async () => {
    const transport = new ScriptedTransport(Array.from({ length: 10 }, () => rcResponse(0x922)));
    const tpm = new Tpm(transport, { retries: 3, retryDelayMs: 1 });
    await assert.rejects(tpm.getRandom(8), { code: 'TPM_RC_RETRY', retryable: true });
    assert.equal(transport.sent.length, 4);
  });

  test('TPM_RC_FAILURE is not retried', async () => {
    const transport = new ScriptedTransport([rcResponse(0x101), rcResponse(0x101)]);
    await assert.rejects(new Tpm(transport).getRandom(8), { code: 'TPM_RC_FAILURE', rc: 0x101, retryable: false });
    assert.equal(transport.sent.length, 1);
  });

  test('startup treats TPM_RC_INITIALIZE (already started) as success', async () => {
    const transport = new ScriptedTransport([rcResponse(0x100)]);
    await new Tpm(transport).startup();
    assert.equal(hex(transport.sent[0] ?? new Uint8Array()), '80010000000c000001440000');
  });
});

/** Crafts a PCR_Read response: counter, selection of sha256 PCRs, one 32-byte digest per PCR (filled with the PCR index). */
function pcrReadResponse(updateCounter: number, pcrs: readonly number[], digestCount = pcrs.length): Uint8Array {
  const w = new TpmWriter().u16(0x8001).u32(0).u32(0).u32(updateCounter);
  writePcrSelections(w, [{ hashAlg: 0xb, pcrs }]);
  w.u32(digestCount);
  for (let i = 0; i < digestCount; i++) w.tpm2b(new Uint8Array(32).fill(pcrs[i] ?? 0xee));
  return w.patchU32(2, w.length).finish();
}

describe('PCR_Read splitting', () => {
  const nine = Array.from({ length: 9 }, (_, i) => ({ bank: 'sha256' as const, pcr: i }));
  const first8 = [0, 1, 2, 3, 4, 5, 6, 7];

  test('reads the PCRs the TPM left out in further commands', async () => {
    const transport = new ScriptedTransport([pcrReadResponse(5, first8), pcrReadResponse(5, [8])]);
    const values = await new Tpm(transport).pcrRead(nine);
    assert.deepEqual(values.map((v) => `${v.pcr}:${v.value[0]}`), nine.map(({ pcr }) => `${pcr}:${pcr}`));
    // The second command asks only for PCR 8: bitmap 00 01 00.
    assert.equal(hex(transport.sent[1] ?? new Uint8Array()).slice(-12), '000b03000100');
  });

  test('starts over when the update counter moves between the commands', async () => {
    const transport = new ScriptedTransport([pcrReadResponse(5, first8), pcrReadResponse(6, [8]), pcrReadResponse(6, first8), pcrReadResponse(6, [8])]);
    const values = await new Tpm(transport).pcrRead(nine);
    assert.equal(values.length, 9);
    assert.equal(transport.sent.length, 4);
  });

  test('gives up with TPM_PCRS_UNSTABLE after 5 rounds', async () => {
    const script = Array.from({ length: 5 }, (_, round) => [pcrReadResponse(round * 2, first8), pcrReadResponse(round * 2 + 1, [8])]).flat();
    await assert.rejects(new Tpm(new ScriptedTransport(script)).pcrRead(nine), { code: 'TPM_PCRS_UNSTABLE', attempts: 5 });
  });

  test('PCRs the TPM does not return are TPM_PCR_UNAVAILABLE; digest count mismatch is TPM_BAD_RESPONSE', async () => {
    await assert.rejects(new Tpm(new ScriptedTransport([pcrReadResponse(1, first8), pcrReadResponse(1, [])])).pcrRead(nine), {
      code: 'TPM_PCR_UNAVAILABLE',
      missing: ['sha256:8'],
    });
    await assert.rejects(new Tpm(new ScriptedTransport([pcrReadResponse(1, [10], 0)])).pcrRead([{ bank: 'sha256', pcr: 10 }]), { code: 'TPM_BAD_RESPONSE' });
  });
});

describe('quote flow', () => {
  const ak = { handle: 0x80000000, alg: 'ecc' as const, hierarchy: 'endorsement' as const, public: new Uint8Array(), name: new Uint8Array() };
  const quote = exchange('quote-ecc', 0x158).response;
  const pcrRead = exchange('quote-ecc', 0x17e).response;
  const nonce = new Uint8Array(32).fill(0x42);
  const pcrs = [{ bank: 'sha256' as const, pcr: 10 }, { bank: 'sha1' as const, pcr: 10 }];
  /** A PCR_Read response whose sha256 value differs from the quoted one. */
  const changed = pcrRead.slice();
  changed[changed.length - 1] ^= 1;

  test('retries quote + read until the values match the quote', async () => {
    const transport = new ScriptedTransport([quote, changed, quote, pcrRead]);
    const q = await new Tpm(transport).quote({ nonce, pcrs, ak });
    assert.equal(q.attempts, 2);
    assert.deepEqual(q.pcrs.map((v) => `${v.bank}:${v.pcr}`), ['sha256:10', 'sha1:10']);
    assert.equal(hex(q.pcrs[1]?.value ?? new Uint8Array()), hex(pcrRead.subarray(pcrRead.length - 20)));
  });

  test('gives up with TPM_PCRS_UNSTABLE after the bounded attempts', async () => {
    const transport = new ScriptedTransport([quote, changed, quote, changed, quote, changed]);
    await assert.rejects(new Tpm(transport).quote({ nonce, pcrs, ak, attempts: 3 }), { code: 'TPM_PCRS_UNSTABLE', attempts: 3 });
    assert.equal(transport.sent.length, 6);
  });
});
