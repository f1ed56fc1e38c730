/**
 * Judging real-kernel captures against Keylime runtime policies: a policy made from one capture
 * accepts it and flags exactly the records another capture adds or changes; excludes (Python
 * regular expressions, anchored at the start), algorithm prefixes, ima-buf keyrings (listed,
 * ignored, `*`), violations under both treatments, boot_aggregate values, starting at a global
 * index, and records that do not decode.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ImaRecord } from '../../src/ima/index.js';
import { PolicyJudge, loadRuntimePolicy } from '../../src/policy/index.js';
import { captureRecords, emptyPolicy, failureLines, judgeAll, policyFrom } from './_policy.js';
import { digestNgField, makeRecord, nameNgField } from '../../src/testing/index.js';

const short = captureRecords('short-ima-ng');
const keys = captureRecords('keys-ima-ng');
const violations = captureRecords('violations-ima-sig');

describe('a policy made from a capture', () => {
  it('accepts the capture it was made from, every record', () => {
    for (const records of [short, keys, violations]) {
      const v = judgeAll(policyFrom(records), records);
      assert.equal(v.ok, true, failureLines(v).join('\n'));
      assert.equal(v.summary.records, records.length);
      assert.equal(v.summary.passed, records.length);
    }
  });

  it('flags exactly what another capture adds or changes', () => {
    // keys-ima-ng adds the .builtin_trusted_keys certificate (record 3) and its /etc/capture-info differs.
    assert.deepEqual(failureLines(judgeAll(policyFrom(short), keys)), ['3 .builtin_trusted_keys keyring_not_allowed', '5 /etc/capture-info digest_not_allowed']);
    // violations-ima-sig: another /etc/capture-info, and files short-ima-ng never measured; its two
    // violations (14, 17) are accepted by default, so only the measured files fail.
    const v = judgeAll(policyFrom(short), violations);
    assert.deepEqual(failureLines(v), [
      '4 /etc/capture-info digest_not_allowed',
      '15 /data/ow.txt not_in_policy',
      '16 /data/tomtou.txt not_in_policy',
      '18 /data/changed.txt not_in_policy',
      '19 /data/changed.txt not_in_policy',
    ]);
    assert.deepEqual(v.summary.reasons, { not_in_policy: 4, digest_not_allowed: 1 });
    assert.deepEqual(
      v.violations.map((f) => `${f.index} ${f.path} ${f.digest}`),
      ['14 /data/ow.txt sha256:' + '0'.repeat(64), '17 /data/tomtou.txt sha256:' + '0'.repeat(64)],
    );
    assert.equal(v.summary.violations, 2);
    assert.equal(v.summary.violationTreatment, 'accept');
  });

  it('the policy is what keylime-policy writes: sorted unique digests, key under its keyring, generator 3', () => {
    const doc = policyFrom(keys);
    assert.deepEqual(doc.meta, { version: 1, generator: 3 });
    assert.deepEqual(doc.keyrings, { '.builtin_trusted_keys': ['e10cdfe6ca9402f53845865d09305a63eef0fdfeb3d92a28cafca181326008ed'] });
    assert.deepEqual(doc['ima-buf'], {});
    assert.deepEqual(doc.digests.boot_aggregate, ['143181f8f0f2da73d1db80510c30bf0e6bebb136df0eeae103948240ca47d34f']);
    assert.equal(Object.keys(doc.digests).length, 14);
    // A changed file measured twice gets both digests, sorted.
    assert.deepEqual(policyFrom(violations).digests['/data/changed.txt'], [
      '7b9a72466d3960eb2aacccfc848939453490db0678bd4725def3f789b891c919',
      '9160d4be34c8695bd172a76c7c7966587ea5a4d991ad22c87b2b91af54aa9ebb',
    ]);
    // Violations are left out: their zero digest is no file's.
    assert.deepEqual(policyFrom(violations).digests['/data/ow.txt'], ['2d27fbdf4e8ca207afbfa388ca9172fbcc6c70e534af2476b3b704f87debadcf']);
  });
});

describe('excludes', () => {
  const base = policyFrom(short);
  it('a joined Python expression matched at the start of the path excludes', () => {
    const v = judgeAll({ ...base, excludes: ['/data/.*', '/etc/capture-'] }, violations);
    assert.deepEqual(failureLines(v), []);
    // Exclusion comes first: the /data files the policy lists are excluded too (4 + 3 of /data).
    assert.equal(v.summary.excluded, 7);
  });
  it('is anchored at the start only (re.match), not at the end', () => {
    // '/capture-info' matches no path from its start; 'changed' neither; '/data/ch' is a prefix.
    const v = judgeAll({ ...base, excludes: ['/capture-info', 'changed', '/data/ch'] }, violations);
    assert.deepEqual(failureLines(v), ['4 /etc/capture-info digest_not_allowed', '15 /data/ow.txt not_in_policy', '16 /data/tomtou.txt not_in_policy']);
  });
  it('apply to keyring and buffer names too (Keylime _validate_ima_ng)', () => {
    assert.deepEqual(failureLines(judgeAll({ ...policyFrom(short), excludes: ['\\.builtin'] }, keys)), ['5 /etc/capture-info digest_not_allowed']);
  });
  it('Python syntax is honoured: \\d is Unicode, $ allows a final newline', () => {
    const records = [fileRecord('/data/١٢', 'sha256', 1), fileRecord('/etc/passwd\n', 'sha256', 2), fileRecord('/etc/passwd2', 'sha256', 3)];
    const v = judgeAll(emptyPolicy({ excludes: ['/data/\\d+$', '/etc/passwd$'] }), records);
    assert.deepEqual(failureLines(v), ['2 /etc/passwd2 not_in_policy']);
  });
});

/** An ima-ng file record with a pseudo-random digest of `algo`. */
function fileRecord(path: string, algo: 'sha1' | 'sha256' | 'sha512', seed: number, size?: number): ImaRecord {
  const n = size ?? { sha1: 20, sha256: 32, sha512: 64 }[algo];
  const digest = Uint8Array.from({ length: n }, (_, i) => (seed * 31 + i * 7) & 0xff);
  // The kernel's names are bytes (UTF-8 here); nameNgField writes Latin-1, so the NUL is added here.
  return makeRecord('ima-ng', [digestNgField(algo, digest), new Uint8Array([...new TextEncoder().encode(path), 0])]);
}

const hexOf = (rec: ImaRecord): string => {
  const end = rec.data.indexOf(0, 4);
  const len = rec.data[0] ?? 0;
  return Buffer.from(rec.data.subarray(end + 1, 4 + len)).toString('hex');
};

describe('algorithm prefixes', () => {
  it('a digest passes only under its own value; sha1, sha256, sha512 digests each match their own length', () => {
    const records = [fileRecord('/bin/a', 'sha1', 1), fileRecord('/bin/b', 'sha256', 2), fileRecord('/bin/c', 'sha512', 3)];
    const doc = emptyPolicy({ digests: Object.fromEntries(records.map((r, i) => [`/bin/${'abc'[i]}`, [hexOf(r)]])) });
    assert.deepEqual(failureLines(judgeAll(doc, records)), []);
    // The sha256 digest of /bin/b listed for a record that claims sha1 with other bytes: not allowed.
    const other = fileRecord('/bin/b', 'sha1', 2);
    assert.deepEqual(failureLines(judgeAll(doc, [other])), ['0 /bin/b digest_not_allowed']);
  });
  it('a digest whose length is not its algorithm size is malformed', () => {
    const wrong = fileRecord('/bin/a', 'sha256', 1, 20);
    assert.deepEqual(failureLines(judgeAll(emptyPolicy({ digests: { '/bin/a': [hexOf(wrong)] } }), [wrong])), ['0 /bin/a digest_malformed']);
  });
});

describe('ima-buf keyrings', () => {
  const doc = policyFrom(keys);
  const keyRecord = keys[3] as ImaRecord;
  it('a listed key passes and is learned', () => {
    const v = judgeAll(doc, [keyRecord]);
    assert.equal(v.ok, true);
    assert.equal(v.summary.keysLearned, 1);
  });
  it('an ignored keyring, or *, skips the measurement', () => {
    for (const ignored of [['.builtin_trusted_keys'], ['*']]) {
      const v = judgeAll({ ...doc, keyrings: {}, ima: { ...doc.ima, ignored_keyrings: ignored } }, [keyRecord]);
      assert.equal(v.ok, true);
      assert.equal(v.summary.keyringsIgnored, 1);
      assert.equal(v.summary.keysLearned, 0);
    }
  });
  it('another digest under the keyring fails; a buffer that is no key is judged against ima-buf', () => {
    assert.deepEqual(failureLines(judgeAll({ ...doc, keyrings: { '.builtin_trusted_keys': ['00'.repeat(32)] } }, [keyRecord])), ['0 .builtin_trusted_keys keyring_not_allowed']);
    const text = new TextEncoder().encode('BOOT_IMAGE=/vmlinuz ro');
    const digest = Uint8Array.from({ length: 32 }, (_, i) => i);
    const buf = makeRecord('ima-buf', [digestNgField('sha256', digest), nameNgField('kexec-cmdline'), text]);
    assert.deepEqual(failureLines(judgeAll(doc, [buf])), ['0 kexec-cmdline buffer_not_allowed']);
    assert.equal(judgeAll({ ...doc, 'ima-buf': { 'kexec-cmdline': [Buffer.from(digest).toString('hex')] } }, [buf]).ok, true);
  });
});

describe('violations', () => {
  const doc = policyFrom(violations);
  it('accepted by default, rejected on request, named either way', () => {
    const accepted = judgeAll(doc, violations);
    assert.equal(accepted.ok, true);
    assert.equal(accepted.violations.length, 2);
    const rejected = judgeAll(doc, violations, { violations: 'reject' });
    assert.deepEqual(failureLines(rejected), ['14 /data/ow.txt violation', '17 /data/tomtou.txt violation']);
    assert.equal(rejected.summary.violationTreatment, 'reject');
    assert.equal(rejected.summary.violations, 2);
  });
});

describe('boot_aggregate, PCR, template digest, undecodable records', () => {
  const doc = policyFrom(short);
  it('boot_aggregate against the allowed values, extra values from the caller', () => {
    const noAggregate = { ...doc, digests: { ...doc.digests, boot_aggregate: ['ab'.repeat(32)] } };
    assert.deepEqual(failureLines(judgeAll(noAggregate, short)), ['0 boot_aggregate boot_aggregate']);
    assert.equal(judgeAll(noAggregate, short, { bootAggregates: ['143181f8f0f2da73d1db80510c30bf0e6bebb136df0eeae103948240ca47d34f'] }).ok, true);
  });
  it('another PCR, a template digest that is not SHA-1 of the data, an unknown template', () => {
    const rec = short[1] as ImaRecord;
    const records = [{ ...rec, pcr: 11 }, { ...rec, digest: new Uint8Array(20).fill(1) }, { ...rec, template: 'ima-unknown' }];
    assert.deepEqual(failureLines(judgeAll(doc, records)), ['0 /init pcr', '1 /init template_hash', '2  unparsable']);
  });
});

describe('from any global index', () => {
  it('indexes count from `from`; the judge keeps no record', () => {
    const judge = new PolicyJudge(loadRuntimePolicy(JSON.parse(JSON.stringify(policyFrom(short)))), { from: 1000 });
    for (const rec of keys.slice(3)) judge.judge(rec);
    const v = judge.verdict();
    assert.deepEqual(failureLines(v), ['1000 .builtin_trusted_keys keyring_not_allowed', '1002 /etc/capture-info digest_not_allowed']);
    assert.equal(v.summary.from, 1000);
    assert.equal(v.summary.records, keys.length - 3);
  });
});
