import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { GetRandom, PcrExtend, PcrRead, PcrReset, TPM_RH, TpmReader, TpmWriter, decodeResponseCode, encodeCommand, readPcrSelections, selectionOf, writePcrSelections } from '../../src/testing/index.js';
import { hex } from './_fixtures.js';

describe('command encoding is byte-exact (docs/tpm.md#wire-basics)', () => {
  test('GetRandom(16)', () => {
    assert.equal(hex(encodeCommand(GetRandom, { bytesRequested: 16 })), '80010000000c0000017b0010');
  });
  test('PCR_Read sha1:10 + sha256:10', () => {
    const cmd = encodeCommand(PcrRead, { selections: selectionOf([{ bank: 'sha1', pcr: 10 }, { bank: 'sha256', pcr: 10 }]) });
    assert.equal(hex(cmd), '80010000001a0000017e' + '00000002' + '000403000400' + '000b03000400');
  });
  test('PCR_Extend(10, sha1, sha256) with the empty-password session', () => {
    const d1 = new Uint8Array(20).fill(1);
    const d2 = new Uint8Array(32).fill(2);
    const cmd = encodeCommand(PcrExtend, { pcr: 10, digests: [{ hashAlg: 4, digest: d1 }, { hashAlg: 0xb, digest: d2 }] });
    const expectedBody = '00000182' + '0000000a' + '00000009' + '40000009' + '0000' + '00' + '0000' + '00000002' + '0004' + hex(d1) + '000b' + hex(d2);
    assert.equal(hex(cmd), '8002' + (expectedBody.length / 2 + 6).toString(16).padStart(8, '0') + expectedBody);
    assert.equal(TPM_RH.PW, 0x40000009);
  });
  test('PCR_Reset(16) with the empty-password session (Part 3 §22.3: handle, auth, no parameters)', () => {
    assert.equal(hex(encodeCommand(PcrReset, { pcr: 16 })), '80020000001b0000013d' + '00000010' + '00000009' + '40000009' + '0000' + '00' + '0000');
  });
});

describe('TpmReader', () => {
  test('reads big-endian values including u64 above 2^53', () => {
    const r = new TpmReader(Uint8Array.from([0x12, 0x34, 0x56, 0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x00, 0x02, 0xaa, 0xbb]));
    assert.equal(r.u32(), 0x12345678);
    assert.equal(r.u64(), 0xfffffffffffffffen);
    assert.equal(hex(r.tpm2b()), 'aabb');
    r.expectEnd('test');
  });
  test('round-trips what TpmWriter writes, across buffer growth', () => {
    type Item = { kind: 'u8' | 'u16' | 'u32'; v: number } | { kind: 'u64'; v: bigint } | { kind: 'tpm2b'; v: Uint8Array };
    const item: fc.Arbitrary<Item> = fc.oneof(
      fc.record({ kind: fc.constant('u8' as const), v: fc.integer({ min: 0, max: 0xff }) }),
      fc.record({ kind: fc.constant('u16' as const), v: fc.integer({ min: 0, max: 0xffff }) }),
      fc.record({ kind: fc.constant('u32' as const), v: fc.integer({ min: 0, max: 0xffffffff }) }),
      fc.record({ kind: fc.constant('u64' as const), v: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
      fc.record({ kind: fc.constant('tpm2b' as const), v: fc.uint8Array({ maxLength: 300 }) }),
    );
    fc.assert(
      fc.property(fc.array(item, { maxLength: 60 }), (items) => {
        const w = new TpmWriter();
        for (const it of items) {
          if (it.kind === 'u64') w.u64(it.v);
          else if (it.kind === 'tpm2b') w.tpm2b(it.v);
          else w[it.kind](it.v);
        }
        const r = new TpmReader(w.finish());
        for (const it of items) {
          if (it.kind === 'u64') assert.equal(r.u64(), it.v);
          else if (it.kind === 'tpm2b') assert.equal(hex(r.tpm2b()), hex(it.v));
          else assert.equal(r[it.kind](), it.v);
        }
        r.expectEnd('items');
      }),
    );
  });

  test('a read past the end throws TPM_BAD_RESPONSE with the offset', () => {
    const r = new TpmReader(Uint8Array.from([0x00, 0x05, 0x01]));
    assert.throws(() => r.tpm2b('x'), { code: 'TPM_BAD_RESPONSE', offset: 2 });
  });
  test('trailing bytes are an error', () => {
    const r = new TpmReader(Uint8Array.from([1, 2, 3]));
    r.u16();
    assert.throws(() => r.expectEnd('thing'), { code: 'TPM_BAD_RESPONSE', offset: 2 });
  });
});

describe('response codes (Part 2 §6.6)', () => {
  const cases: [number, object][] = [
    [0x101, { name: 'TPM_RC_FAILURE', format: 0, warning: false }],
    [0x100, { name: 'TPM_RC_INITIALIZE', format: 0, warning: false }],
    [0x922, { name: 'TPM_RC_RETRY', format: 0, warning: true }],
    [0x908, { name: 'TPM_RC_YIELDED', format: 0, warning: true }],
    [0x902, { name: 'TPM_RC_OBJECT_MEMORY', format: 0, warning: true }],
    // TPM_RC_VALUE on parameter 1: 0x084 | P (0x040) | N=1 << 8
    [0x1c4, { name: 'TPM_RC_VALUE', format: 1, warning: false, parameter: 1 }],
    // TPM_RC_HANDLE on handle 1
    [0x18b, { name: 'TPM_RC_HANDLE', format: 1, warning: false, handle: 1 }],
    // TPM_RC_AUTH_FAIL in session 1: N = 8 + 1
    [0x98e, { name: 'TPM_RC_AUTH_FAIL', format: 1, warning: false, session: 1 }],
    [0x4c4, { name: 'TPM_RC_VALUE', format: 1, warning: false, parameter: 4 }],
    [0x7ff01, { name: 'TPM_RC_0x7ff01', format: 0, warning: false }],
    [0x0901 | 0x400, { name: 'TPM_RC_VENDOR_0xd01', format: 0, warning: false }],
  ];
  for (const [rc, expected] of cases) {
    test(`0x${rc.toString(16)}`, () => assert.deepEqual(decodeResponseCode(rc), expected));
  }
});

describe('PCR selections', () => {
  test('group by bank in first-appearance order, PCRs ascending and unique', () => {
    assert.deepEqual(
      selectionOf([{ bank: 'sha256', pcr: 11 }, { bank: 'sha1', pcr: 10 }, { bank: 'sha256', pcr: 10 }, { bank: 'sha256', pcr: 11 }]),
      [{ hashAlg: 0xb, pcrs: [10, 11] }, { hashAlg: 4, pcrs: [10] }],
    );
  });
  test('round-trip through TPML_PCR_SELECTION, PCRs 0-255', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.constantFrom(4, 0xb, 0xc, 0xd), { minLength: 0, maxLength: 4 }),
        fc.array(fc.uniqueArray(fc.integer({ min: 0, max: 255 }), { minLength: 1 }), { minLength: 4, maxLength: 4 }),
        (algs, pcrSets) => {
          const selections = algs.map((hashAlg, i) => ({ hashAlg, pcrs: [...(pcrSets[i] ?? [])].sort((a, b) => a - b) }));
          const w = new TpmWriter();
          writePcrSelections(w, selections);
          const r = new TpmReader(w.finish());
          assert.deepEqual(readPcrSelections(r), selections);
          r.expectEnd('selection');
        },
      ),
    );
  });
});
