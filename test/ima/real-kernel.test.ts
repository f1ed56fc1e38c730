/**
 * The codec and replay against lists written by a real kernel (test/fixtures/real-kernel):
 * byte-identical round trips, the kernel's ASCII list, PCR 10 of both TPM banks, boot_aggregate.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  AsciiListParser,
  BinaryListParser,
  PcrReplay,
  bootAggregate,
  decodeTemplateFields,
  encodeBinaryList,
  formatAsciiLine,
  formatAsciiLineBytes,
  isViolation,
  parseAsciiList,
  parseBinaryList,
  replayUntilMatch,
  toHex,
  type ParsedRecord,
} from '../../src/ima/index.js';
import { allCaptures, pcrBytes, recordsAsHex } from './_fixtures.js';

const captures = allCaptures();

/** Deterministic chunk sizes from a seed (1..max). */
function chunkSizes(seed: number, max: number): () => number {
  let s = seed;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return 1 + (s % max);
  };
}

function feed(parser: { push(c: Uint8Array): ParsedRecord[]; end(): void }, bytes: Uint8Array, next: () => number): ParsedRecord[] {
  const out: ParsedRecord[] = [];
  for (let at = 0; at < bytes.length; ) {
    const n = next();
    out.push(...parser.push(bytes.slice(at, at + n)));
    at += n;
  }
  parser.end();
  return out;
}

for (const c of captures) {
  test(`${c.name}: parses all records and re-encodes byte-identically`, () => {
    const records = parseBinaryList(c.binary);
    assert.equal(records.length, c.count);
    assert.equal(records.filter(isViolation).length, c.violations);
    assert.deepEqual(encodeBinaryList(records), c.binary);
  });

  test(`${c.name}: ASCII list is byte-identical with the kernel's`, () => {
    const records = parseBinaryList(c.binary);
    const bytes = Buffer.concat(records.map((r) => formatAsciiLineBytes(r)));
    assert.equal(Buffer.compare(bytes, c.ascii), 0);
    assert.equal(records.map((r) => formatAsciiLine(r)).join(''), Buffer.from(c.ascii).toString('utf8'));
  });

  test(`${c.name}: the ASCII parser rebuilds the binary records`, () => {
    const fromAscii = parseAsciiList(c.ascii);
    assert.deepEqual(recordsAsHex(fromAscii), recordsAsHex(parseBinaryList(c.binary)));
    assert.deepEqual(encodeBinaryList(fromAscii), c.binary);
  });

  test(`${c.name}: replay equals PCR 10 of the sha1 and sha256 banks (native)`, () => {
    const replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' } });
    for (const rec of parseBinaryList(c.binary)) replay.extend(rec);
    assert.equal(replay.recordCount, c.count);
    assert.deepEqual(replay.pcrIndexes(), [10]);
    assert.equal(toHex(replay.value('sha1', 10)), c.pcrs.sha1?.['10']);
    assert.equal(toHex(replay.value('sha256', 10)), c.pcrs.sha256?.['10']);
    replay.check({ sha1: { 10: pcrBytes(c, 'sha1', 10) }, sha256: { 10: pcrBytes(c, 'sha256', 10) } });
  });

  test(`${c.name}: the padded sha256 replay does not match the quote (the kernel hashed natively)`, () => {
    const replay = new PcrReplay({ banks: { sha256: 'padded' } });
    for (const rec of parseBinaryList(c.binary)) replay.extend(rec);
    assert.notEqual(toHex(replay.value('sha256', 10)), c.pcrs.sha256?.['10']);
  });

  test(`${c.name}: replayUntilMatch finds the full count`, () => {
    const k = replayUntilMatch(parseBinaryList(c.binary), { sha1: pcrBytes(c, 'sha1', 10), sha256: pcrBytes(c, 'sha256', 10) });
    assert.equal(k, c.count);
  });

  test(`${c.name}: boot_aggregate from PCR 0-9 (sha256) equals the first record's file digest`, () => {
    const first = parseBinaryList(c.binary)[0];
    assert.ok(first !== undefined);
    const decoded = decodeTemplateFields(first);
    const [d, n] = decoded.fields;
    assert.equal(d?.id, 'd-ng');
    assert.equal(n?.id === 'n-ng' ? n.text : undefined, 'boot_aggregate');
    const pcrs = Array.from({ length: 10 }, (_, i) => pcrBytes(c, 'sha256', i));
    assert.equal(toHex(bootAggregate(pcrs, 'sha256')), d !== undefined && d.id === 'd-ng' ? toHex(d.digest) : '');
    assert.equal(d?.id === 'd-ng' ? d.algo : '', 'sha256');
  });

  test(`${c.name}: streaming 1 byte at a time and random chunkings give the same records`, () => {
    const whole = recordsAsHex(parseBinaryList(c.binary));
    assert.deepEqual(recordsAsHex(feed(new BinaryListParser(), c.binary, () => 1)), whole);
    for (let seed = 1; seed <= 20; seed++) {
      const parser = new BinaryListParser();
      assert.deepEqual(recordsAsHex(feed(parser, c.binary, chunkSizes(seed, 300))), whole);
      assert.equal(parser.bytesConsumed, c.binary.length);
      assert.equal(parser.recordsParsed, c.count);
      assert.equal(parser.bufferedBytes, 0);
    }
    const ascii = recordsAsHex(parseAsciiList(c.ascii));
    assert.deepEqual(recordsAsHex(feed(new AsciiListParser(), c.ascii, () => 1)), ascii);
    assert.deepEqual(recordsAsHex(feed(new AsciiListParser(), c.ascii, chunkSizes(7, 500))), ascii);
  });
}

test('violations-ima-sig: violations show zero digests, have empty signatures, and extend 0xFF', () => {
  const c = captures[1];
  assert.ok(c !== undefined);
  const records = parseBinaryList(c.binary);
  const violations = records.filter(isViolation);
  assert.deepEqual(
    violations.map((r) => formatAsciiLine(r).split(' ').slice(3).join(' ')),
    [`sha256:${'0'.repeat(64)} /data/ow.txt \n`, `sha256:${'0'.repeat(64)} /data/tomtou.txt \n`],
  );
  // An independent SHA-1 chain: 0xFF for violations reproduces the quote, zeros do not.
  const chain = (violationDigest: Uint8Array) =>
    toHex(
      records.reduce(
        (pcr, r) => createHash('sha1').update(pcr).update(isViolation(r) ? violationDigest : r.digest).digest(),
        Buffer.alloc(20),
      ),
    );
  assert.equal(chain(new Uint8Array(20).fill(0xff)), c.pcrs.sha1?.['10']);
  assert.notEqual(chain(new Uint8Array(20)), c.pcrs.sha1?.['10']);
});

test('keys-ima-ng: the ima-buf record holds the DER certificate of the built-in key', () => {
  const c = captures[2];
  assert.ok(c !== undefined);
  const buf = parseBinaryList(c.binary).find((r) => r.template === 'ima-buf');
  assert.ok(buf !== undefined);
  const decoded = decodeTemplateFields(buf);
  assert.deepEqual(decoded.fieldIds, ['d-ng', 'n-ng', 'buf']);
  const [, name, cert] = decoded.fields;
  assert.equal(name?.id === 'n-ng' ? name.text : '', '.builtin_trusted_keys');
  assert.equal(toHex(cert?.bytes.subarray(0, 2) ?? new Uint8Array(0)), '3082');
});
