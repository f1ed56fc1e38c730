/**
 * Property tests over generated records of every template (fast-check): binary and ASCII round
 * trips in every bank, mode and byte order, bank digests and replay against independent
 * computations.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import {
  BANKS,
  DIGEST_SIZE,
  ImaError,
  PcrReplay,
  convertTemplateData,
  decodeTemplateFields,
  encodeBinaryRecord,
  extendedDigest,
  formatAsciiLineBytes,
  isViolation,
  parseAsciiLine,
  parseBinaryList,
  templateDigest,
  toHex,
  type BankMode,
  type BankName,
  type Endian,
  type ImaRecord,
} from '../../src/ima/index.js';
import { recordArbitrary, sha1TemplateDigest } from './_arbitraries.js';

const endians: Endian[] = ['le', 'be'];
const bankModes = fc.tuple(fc.constantFrom(...BANKS), fc.constantFrom<BankMode>('native', 'padded'));
const RUNS = { numRuns: 300 };

/** What the list of `bank` shows for a record, computed without the code under test. */
function expectedBankDigest(g: { record: ImaRecord; fields: readonly Uint8Array[] }, bank: BankName, mode: BankMode): string {
  const { record } = g;
  if (isViolation(record)) return '00'.repeat(DIGEST_SIZE[bank]);
  if (bank === 'sha1' || mode === 'padded') return toHex(record.digest).padEnd(2 * DIGEST_SIZE[bank], '0');
  if (record.template !== 'ima') return createHash(bank).update(record.data).digest('hex');
  const [d = new Uint8Array(20), n = new Uint8Array(0)] = g.fields;
  const padded = Buffer.alloc(256);
  padded.set(n);
  return createHash(bank).update(d).update(padded).digest('hex');
}

for (const endian of endians) {
  test(`binary encode → parse round trip in every bank and mode (${endian})`, () => {
    fc.assert(
      fc.property(fc.array(recordArbitrary(endian), { minLength: 1, maxLength: 5 }), bankModes, (gs, [bank, mode]) => {
        const bytes = Buffer.concat(gs.map((g) => encodeBinaryRecord(g.record, { bank, mode, endian })));
        const parsed = parseBinaryList(bytes, { digestSize: DIGEST_SIZE[bank], endian });
        assert.deepEqual(
          parsed.map((r) => [r.pcr, toHex(r.digest), r.template, toHex(r.data)]),
          gs.map((g) => [g.record.pcr, expectedBankDigest(g, bank, mode), g.record.template, toHex(g.record.data)]),
        );
      }),
      RUNS,
    );
  });

  test(`ASCII format → parse round trip in every bank and mode (${endian})`, () => {
    fc.assert(
      fc.property(recordArbitrary(endian), bankModes, (g, [bank, mode]) => {
        const line = formatAsciiLineBytes(g.record, { bank, mode, endian });
        assert.equal(line[line.length - 1], 0x0a);
        assert.equal(line.indexOf(0x0a), line.length - 1);
        const back = parseAsciiLine(line, { bank, endian });
        assert.equal(back.pcr, g.record.pcr);
        assert.equal(back.template, g.record.template);
        assert.equal(toHex(back.digest), expectedBankDigest(g, bank, mode));
        assert.equal(toHex(back.data), toHex(g.record.data));
      }),
      RUNS,
    );
  });

  test(`decodeTemplateFields returns the fields the record was built from (${endian})`, () => {
    let digestsChecked = 0;
    let modesChecked = 0;
    fc.assert(
      fc.property(recordArbitrary(endian), (g) => {
        const decoded = decodeTemplateFields(g.record, endian);
        assert.deepEqual(decoded.fieldIds, g.fieldIds);
        assert.deepEqual(decoded.fields.map((f) => toHex(f.bytes)), g.fields.map(toHex));
        for (const f of decoded.fields) {
          if (f.id === 'd-ng' && f.bytes.length > 0) {
            assert.equal(toHex(f.bytes), toHex(Buffer.concat([Buffer.from(f.prefix), Buffer.alloc(1), f.digest])));
            digestsChecked++;
          }
          if (f.id === 'imode' && f.bytes.length === 2) {
            assert.equal(f.value, BigInt(endian === 'le' ? Buffer.from(f.bytes).readUInt16LE() : Buffer.from(f.bytes).readUInt16BE()));
            modesChecked++;
          }
        }
      }),
      RUNS,
    );
    // Both typed decodings were checked, not only generated (a 2-byte imode is in about 1 run of 10).
    assert.ok(digestsChecked > 0, 'no d-ng field was checked');
    assert.ok(modesChecked > 0, 'no imode field was checked');
  });
}

test('convertTemplateData le → be → le is the identity and be data splits with be lengths', () => {
  fc.assert(
    fc.property(recordArbitrary('le'), (g) => {
      const be = convertTemplateData(g.record.template, g.record.data, 'le', 'be');
      assert.deepEqual(decodeTemplateFields({ template: g.record.template, data: be }, 'be').fields.map((f) => f.bytes.length), g.fields.map((f) => f.length));
      assert.equal(toHex(convertTemplateData(g.record.template, be, 'be', 'le')), toHex(g.record.data));
    }),
    RUNS,
  );
});

test('templateDigest and extendedDigest follow docs/ima-formats.md#template-digest, #pcr-replay in every bank and mode', () => {
  const fired = { record: 0, fullViolation: 0, paddedViolation: 0 };
  fc.assert(
    fc.property(recordArbitrary('le'), bankModes, (g, [bank, mode]) => {
      assert.equal(toHex(templateDigest(g.record, bank, mode)), expectedBankDigest(g, bank, mode));
      const extended = toHex(extendedDigest(g.record, bank, mode));
      if (!isViolation(g.record)) {
        assert.equal(extended, expectedBankDigest(g, bank, mode));
        fired.record++;
      } else if (mode === 'native' || bank === 'sha1') {
        assert.equal(extended, 'ff'.repeat(DIGEST_SIZE[bank]));
        fired.fullViolation++;
      } else {
        assert.equal(extended, 'ff'.repeat(20) + '00'.repeat(DIGEST_SIZE[bank] - 20));
        fired.paddedViolation++;
      }
    }),
    RUNS,
  );
  // Every branch ran (violations are 1 record in 10, padded non-SHA-1 banks 3 draws in 8).
  assert.ok(fired.record > 0 && fired.fullViolation > 0 && fired.paddedViolation > 0, JSON.stringify(fired));
});

/** Reference replay with createHash, per PCR. */
function referenceReplay(records: readonly ImaRecord[], gs: readonly { record: ImaRecord; fields: readonly Uint8Array[] }[], bank: BankName, mode: BankMode) {
  const pcrs = new Map<number, Buffer>();
  records.forEach((r, i) => {
    const g = gs[i];
    assert.ok(g !== undefined, `record ${i} has no generated source`);
    const size = DIGEST_SIZE[bank];
    let e: Buffer;
    if (!isViolation(r)) e = Buffer.from(expectedBankDigest(g, bank, mode), 'hex');
    else e = Buffer.concat([Buffer.alloc(mode === 'native' ? size : 20, 0xff), Buffer.alloc(mode === 'native' ? 0 : size - 20)]);
    pcrs.set(r.pcr, createHash(bank).update(pcrs.get(r.pcr) ?? Buffer.alloc(size)).update(e).digest());
  });
  return pcrs;
}

test('PcrReplay equals a reference replay for every bank, mode and PCR; state survives toState/fromState', () => {
  fc.assert(
    fc.property(fc.array(recordArbitrary('le'), { minLength: 1, maxLength: 12 }), fc.constantFrom<BankMode>('native', 'padded'), fc.nat(), (gs, mode, cut) => {
      const records = gs.map((g) => ({ ...g.record, pcr: g.record.pcr % 3 === 0 ? 10 : g.record.pcr % 24 }));
      const banks = Object.fromEntries(BANKS.map((b) => [b, mode]));
      const replay = new PcrReplay({ banks });
      const k = cut % (records.length + 1);
      records.slice(0, k).forEach((r) => replay.extend(r));
      const resumed = PcrReplay.fromState(structuredClone(replay.toState()));
      assert.equal(resumed.recordCount, k);
      records.slice(k).forEach((r) => resumed.extend(r));
      for (const bank of BANKS) {
        const ref = referenceReplay(records, gs, bank, bank === 'sha1' ? 'native' : mode);
        assert.deepEqual(resumed.pcrIndexes(), [...ref.keys()].sort((a, b) => a - b));
        for (const [pcr, value] of ref) assert.equal(toHex(resumed.value(bank, pcr)), value.toString('hex'));
      }
    }),
    { numRuns: 150 },
  );
});

test('PcrReplay refuses a record whose data do not hash to its SHA-1 digest', () => {
  fc.assert(
    fc.property(recordArbitrary('le').filter((g) => !isViolation(g.record)), (g) => {
      const digest = Uint8Array.from(sha1TemplateDigest(g.record.template, g.fields, g.record.data));
      digest[0] = (digest[0] ?? 0) ^ 1;
      const tampered = { ...g.record, digest };
      const replay = new PcrReplay({ banks: { sha1: 'native' } });
      assert.throws(() => replay.extend(tampered), (e: unknown) => e instanceof ImaError && e.code === 'IMA_DIGEST_MISMATCH' && e.recordIndex === 0);
      assert.equal(replay.recordCount, 0);
      new PcrReplay({ banks: { sha1: 'native' }, verifyDigests: false }).extend(tampered);
    }),
    { numRuns: 100 },
  );
});
