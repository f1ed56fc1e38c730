/** The synthetic workload generator: deterministic, kernel-shaped, at the requested rates. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PcrReplay, decodeTemplateFields, encodeBinaryList, formatAsciiLineBytes, isViolation, parseAsciiLine, parseBinaryList, toHex } from '../../src/ima/index.js';
import { ImaWorkload } from '../../src/testing/index.js';

test('same seed and options → byte-identical records; another seed → different ones', () => {
  const a = encodeBinaryList(new ImaWorkload({ seed: 7, template: 'mixed', violationRate: 0.05 }).records(500));
  const b = encodeBinaryList(new ImaWorkload({ seed: 7, template: 'mixed', violationRate: 0.05 }).records(500));
  const c = encodeBinaryList(new ImaWorkload({ seed: 8, template: 'mixed', violationRate: 0.05 }).records(500));
  assert.equal(toHex(a), toHex(b));
  assert.notEqual(toHex(a), toHex(c));
});

test('records are kernel-shaped: boot_aggregate first, valid digests, ASCII round trip, rates as asked', () => {
  const aggregate = new Uint8Array(32).fill(0xab);
  const records = [...new ImaWorkload({ seed: 1, template: 'mixed', violationRate: 0.1, signedRate: 0.5, bootAggregate: aggregate }).records(4000)];
  const [first] = records;
  assert.ok(first !== undefined);
  assert.equal(first.template, 'ima-sig');
  const fields = decodeTemplateFields(first).fields;
  assert.deepEqual(fields.map((f) => f.id), ['d-ng', 'n-ng', 'sig']);
  assert.equal(fields[0]?.id === 'd-ng' ? toHex(fields[0].digest) : '', 'ab'.repeat(32));
  assert.equal(fields[1]?.id === 'n-ng' ? fields[1].text : '', 'boot_aggregate');

  const replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' } }); // verifies every SHA-1 digest
  for (const r of records) {
    replay.extend(r);
    const back = parseAsciiLine(formatAsciiLineBytes(r));
    assert.equal(toHex(back.data), toHex(r.data));
  }
  const count = (pred: (t: string) => boolean) => records.filter((r) => pred(r.template)).length;
  const buf = count((t) => t === 'ima-buf');
  const files = records.length - 1 - buf;
  const violations = records.filter(isViolation).length;
  assert.ok(buf > 0.15 * 3999 && buf < 0.25 * 3999, `ima-buf share ${buf}`);
  assert.ok(violations > 0.07 * files && violations < 0.13 * files, `violations ${violations} of ${files}`);
  assert.deepEqual(parseBinaryList(encodeBinaryList(records)).length, 4000);
  // Violations: zero file digest of the ima_hash algorithm, empty signature.
  const v = records.find(isViolation);
  assert.ok(v !== undefined);
  const vf = decodeTemplateFields(v).fields;
  assert.equal(vf[0]?.id === 'd-ng' ? `${vf[0].prefix}${toHex(vf[0].digest)}` : '', `sha256:${'00'.repeat(32)}`);
  assert.equal(vf[2]?.bytes.length, 0);
});

test('ima-ng workload with pcr and sha1 file hash options', () => {
  const records = [...new ImaWorkload({ seed: 3, fileHash: 'sha1', pcr: 11, bootAggregate: false }).records(50)];
  assert.ok(records.every((r) => r.template === 'ima-ng' && r.pcr === 11));
  assert.ok(records.every((r) => decodeTemplateFields(r).fields[0]?.bytes.length === 5 + 1 + 20));
  assert.ok(!records.some((r) => decodeTemplateFields(r).fields[1]?.bytes.includes(0x20)));
});
