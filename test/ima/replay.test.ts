/** PcrReplay API: checkpoints, state, checks, replay-until-match, boot_aggregate. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { decode, encode } from 'cbor-x';
import { ImaError, PcrReplay, ReplayError, bootAggregate, parseBinaryList, replayUntilMatch, replayUntilMatchAsync, toHex, type PcrReplayState } from '../../src/ima/index.js';
import { allCaptures, pcrBytes } from './_fixtures.js';
import { ImaWorkload } from '../../src/testing/index.js';

const [short, violations] = allCaptures();
assert.ok(short !== undefined && violations !== undefined);
const shortRecords = parseBinaryList(short.binary);
const workload = [...new ImaWorkload({ seed: 42, template: 'mixed', violationRate: 0.1 }).records(200)];

function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'no error';
  } catch (e) {
    return e instanceof ImaError ? e.code : `not an ImaError: ${String(e)}`;
  }
}

test('check() throws ReplayError naming bank, PCR, record count, expected and computed hex', () => {
  const replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' } });
  for (const r of shortRecords.slice(0, 5)) replay.extend(r);
  const expected = short.pcrs.sha256?.['10'] ?? '';
  try {
    replay.check({ sha256: { 10: expected } });
    assert.fail('check passed on a partial replay');
  } catch (e) {
    assert.ok(e instanceof ReplayError);
    assert.equal(e.code, 'IMA_REPLAY_MISMATCH');
    assert.equal(e.bank, 'sha256');
    assert.equal(e.pcr, 10);
    assert.equal(e.recordIndex, 5);
    assert.equal(e.expected, expected);
    assert.equal(e.computed, toHex(replay.value('sha256', 10)));
    assert.match(e.message, /^sha256 PCR 10 after 5 records: expected [0-9a-f]{64}, replayed [0-9a-f]{64}$/);
  }
});

test('a checkpoint state, CBOR-encoded and restored, continues to the same PCRs', () => {
  const full = new PcrReplay({ banks: { sha1: 'native', sha256: 'native', sha384: 'padded' } });
  const head = new PcrReplay({ banks: { sha1: 'native', sha256: 'native', sha384: 'padded' } });
  workload.forEach((r, i) => {
    full.extend(r);
    if (i < 120) head.extend(r);
  });
  const state = decode(encode(head.toState())) as PcrReplayState;
  const resumed = PcrReplay.fromState(state);
  assert.equal(resumed.recordCount, 120);
  assert.deepEqual(resumed.banks, { sha1: 'native', sha256: 'native', sha384: 'padded' });
  for (const r of workload.slice(120)) resumed.extend(r);
  assert.equal(resumed.recordCount, 200);
  for (const bank of ['sha1', 'sha256', 'sha384'] as const) assert.equal(toHex(resumed.value(bank, 10)), toHex(full.value(bank, 10)));
});

test('start values: replaying the tail from the head\'s PCRs equals the whole replay', () => {
  const head = new PcrReplay({ banks: { sha256: 'native' } });
  for (const r of shortRecords.slice(0, 7)) head.extend(r);
  const tail = new PcrReplay({ banks: { sha256: 'native' }, start: { sha256: { 10: head.value('sha256', 10) } }, recordCount: 7 });
  for (const r of shortRecords.slice(7)) tail.extend(r);
  assert.equal(tail.recordCount, shortRecords.length);
  assert.equal(toHex(tail.value('sha256', 10)), short.pcrs.sha256?.['10']);
});

test('replayUntilMatch returns the smallest matching count; extra records after it are normal', async () => {
  const quote = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' } });
  for (const r of workload.slice(0, 150)) quote.extend(r);
  const expected = { sha1: quote.value('sha1', 10), sha256: quote.value('sha256', 10) };
  assert.equal(replayUntilMatch(workload, expected), 150);
  assert.equal(await replayUntilMatchAsync(workload, expected), 150);
  assert.equal(replayUntilMatch(workload.slice(0, 149), expected), null);
  assert.equal(replayUntilMatch([], { sha1: new Uint8Array(20) }), 0);
  // From a checkpoint: the count includes the checkpoint's records.
  const checkpoint = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' } });
  for (const r of workload.slice(0, 100)) checkpoint.extend(r);
  assert.equal(replayUntilMatch(workload.slice(100), expected, { replay: checkpoint }), 150);
  // The real capture: its quote matches after all of its records.
  assert.equal(replayUntilMatch(parseBinaryList(violations.binary), { sha256: pcrBytes(violations, 'sha256', 10) }), violations.count);
});

test('records of other PCRs go to their own PCR', () => {
  const replay = new PcrReplay({ banks: { sha1: 'native' } });
  const [a, b] = workload;
  assert.ok(a !== undefined && b !== undefined);
  replay.extend({ ...a, pcr: 11 });
  replay.extend(b);
  assert.deepEqual(replay.pcrIndexes(), [10, 11]);
  const extend = (pcr: Uint8Array, d: Uint8Array) => createHash('sha1').update(pcr).update(d).digest('hex');
  assert.equal(toHex(replay.value('sha1', 11)), extend(new Uint8Array(20), a.digest));
  assert.equal(toHex(replay.value('sha1', 10)), extend(new Uint8Array(20), b.digest));
  assert.equal(toHex(replay.value('sha1', 12)), '00'.repeat(20));
});

test('malformed states, start values and banks → IMA_BAD_STATE', () => {
  const state = new PcrReplay({ banks: { sha1: 'native' } }).toState();
  assert.equal(codeOf(() => PcrReplay.fromState({ ...state, recordCount: -1 })), 'IMA_BAD_STATE');
  assert.equal(codeOf(() => PcrReplay.fromState(JSON.parse('{"recordCount":0,"banks":[{"bank":"md5","mode":"native","pcrs":[]}]}'))), 'IMA_BAD_STATE');
  assert.equal(codeOf(() => new PcrReplay({ banks: { sha1: 'native' }, start: { sha1: { 10: new Uint8Array(32) } } })), 'IMA_BAD_STATE');
  assert.equal(codeOf(() => new PcrReplay({ banks: {} })), 'IMA_BAD_STATE');
  assert.equal(codeOf(() => new PcrReplay({ banks: { sha1: 'native' } }).value('sha256', 10)), 'IMA_BAD_STATE');
  assert.equal(codeOf(() => new PcrReplay().extend({ pcr: 10, digest: new Uint8Array(32), template: 'ima-ng', data: new Uint8Array(4) })), 'IMA_BAD_LENGTH');
});

test('bootAggregate: SHA-1 hashes PCR 0-7 only, other banks PCR 0-9', () => {
  const sha1 = Array.from({ length: 10 }, (_, i) => pcrBytes(short, 'sha1', i));
  const expected = createHash('sha1').update(Buffer.concat(sha1.slice(0, 8))).digest('hex');
  assert.equal(toHex(bootAggregate(sha1, 'sha1')), expected);
  assert.equal(toHex(bootAggregate(sha1.slice(0, 8), 'sha1')), expected);
  const sha256 = Array.from({ length: 10 }, (_, i) => pcrBytes(short, 'sha256', i));
  assert.equal(toHex(bootAggregate(sha256, 'sha256')), createHash('sha256').update(Buffer.concat(sha256)).digest('hex'));
  assert.equal(codeOf(() => bootAggregate(sha256.slice(0, 8), 'sha256')), 'IMA_BAD_LENGTH');
  assert.equal(codeOf(() => bootAggregate(sha1, 'sha256')), 'IMA_BAD_LENGTH');
});
