/**
 * Mutation fuzzing of the real-kernel logs (slow suite): 400,000 binary mutations (bit flips, byte
 * inserts and deletes, length-field overwrites, splices of two logs) and 100,000 ASCII mutations.
 * Every parse must end in records or an ImaError with a codec code; a list that parses must
 * re-encode to the same bytes, replay (every 10th) may only fail with IMA_DIGEST_MISMATCH, and the
 * streaming parser (every 50th) must agree with the one-shot parse.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BinaryListParser,
  ImaError,
  MAX_TEMPLATE_DATA_LEN,
  PcrReplay,
  encodeBinaryList,
  formatAsciiLineBytes,
  parseAsciiList,
  parseBinaryList,
  type ParsedRecord,
} from '../../src/ima/index.js';
import { allCaptures, recordsAsHex } from '../ima/_fixtures.js';

const BINARY_MUTATIONS = 400_000;
const ASCII_MUTATIONS = 100_000;
const CODES = new Set<string>(['IMA_TRUNCATED', 'IMA_BAD_LENGTH', 'IMA_BAD_TEMPLATE', 'IMA_BAD_ASCII']);
const captures = allCaptures();

/** xorshift32: deterministic mutations, reproducible from the iteration number. */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}

const LENGTHS = [0, 1, 3, 255, 256, 4097, 0x7fffffff, 0x80000000, 0xffffffff, MAX_TEMPLATE_DATA_LEN, MAX_TEMPLATE_DATA_LEN + 1];

function mutate(bytes: Uint8Array, other: Uint8Array, offsets: readonly number[], rand: (n: number) => number): Uint8Array {
  const out = Buffer.from(bytes);
  switch (rand(5)) {
    case 0: {
      for (let i = 1 + rand(4); i > 0; i--) {
        const at = rand(out.length);
        out[at] = (out[at] ?? 0) ^ (1 << rand(8));
      }
      return out;
    }
    case 1: {
      const at = rand(out.length + 1);
      return Buffer.concat([out.subarray(0, at), Buffer.from(Array.from({ length: 1 + rand(8) }, () => rand(256))), out.subarray(at)]);
    }
    case 2: {
      const at = rand(out.length);
      return Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + rand(16))]);
    }
    case 3: {
      // Overwrite the name length (+24) or what follows the name (data length) of some record.
      const rec = offsets[rand(offsets.length)] ?? 0;
      const nameLen = out.readUInt32LE(Math.min(rec + 24, out.length - 4));
      const field = rand(2) === 0 ? rec + 24 : rec + 28 + Math.min(nameLen, 16);
      const value = rand(3) === 0 ? rand(0x10000) : (LENGTHS[rand(LENGTHS.length)] ?? 0);
      if (field + 4 <= out.length) out.writeUInt32LE(value >>> 0, field);
      return out;
    }
    default: {
      const a = rand(out.length + 1);
      const b = rand(other.length + 1);
      return Buffer.concat([out.subarray(0, a), other.subarray(b)]);
    }
  }
}

function expectCodecError(e: unknown, what: string): string {
  if (e instanceof ImaError && CODES.has(e.code)) return e.code;
  throw new Error(`${what}: not a codec ImaError: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
}

test(`binary fuzz: ${BINARY_MUTATIONS} mutations of the real logs give records or typed errors`, () => {
  const offsets = captures.map((c) => {
    const o = [0];
    for (const r of parseBinaryList(c.binary)) o.push((o[o.length - 1] ?? 0) + encodeBinaryList([r]).length);
    return o.slice(0, -1);
  });
  const outcomes = new Map<string, number>();
  const started = Date.now();
  for (let i = 0; i < BINARY_MUTATIONS; i++) {
    const rand = rng(i + 1);
    const which = rand(captures.length);
    const c = captures[which];
    const other = captures[rand(captures.length)];
    if (c === undefined || other === undefined) continue;
    const mutated = mutate(c.binary, other.binary, offsets[which] ?? [0], rand);
    let outcome: string;
    try {
      const records = parseBinaryList(mutated);
      assert.equal(Buffer.compare(encodeBinaryList(records), mutated), 0, `mutation ${i} parsed but does not re-encode`);
      for (const r of records) {
        try {
          formatAsciiLineBytes(r);
        } catch (e) {
          expectCodecError(e, `mutation ${i} ASCII`);
        }
      }
      if (i % 10 === 0) {
        // Replay with verification: a mutated record fails only with IMA_DIGEST_MISMATCH.
        const replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' } });
        try {
          for (const r of records) replay.extend(r);
        } catch (e) {
          assert.ok(e instanceof ImaError && e.code === 'IMA_DIGEST_MISMATCH', `mutation ${i} replay: ${String(e)}`);
        }
      }
      if (i % 50 === 0) {
        // The streaming parser agrees, chunked at a mutation-dependent size.
        const parser = new BinaryListParser();
        const streamed: ParsedRecord[] = [];
        const step = 1 + (i % 97);
        for (let at = 0; at < mutated.length; at += step) streamed.push(...parser.push(mutated.subarray(at, at + step)));
        parser.end();
        assert.deepEqual(recordsAsHex(streamed), recordsAsHex(records), `mutation ${i}: streaming differs`);
      }
      outcome = 'parsed';
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      outcome = expectCodecError(e, `mutation ${i}`);
    }
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  const seconds = (Date.now() - started) / 1000;
  process.stdout.write(`# binary fuzz outcomes ${JSON.stringify(Object.fromEntries(outcomes))} in ${seconds.toFixed(1)} s\n`);
  // Every kind of outcome occurs: the mutations reach the checks they are meant to reach.
  for (const code of ['parsed', 'IMA_TRUNCATED', 'IMA_BAD_LENGTH']) assert.ok((outcomes.get(code) ?? 0) > 100, `${code}: ${outcomes.get(code)}`);
});

test(`ASCII fuzz: ${ASCII_MUTATIONS} mutations of the kernel's ASCII lists give records or typed errors`, () => {
  const outcomes = new Map<string, number>();
  for (let i = 0; i < ASCII_MUTATIONS; i++) {
    const rand = rng(0x9e3779b9 ^ i);
    const c = captures[rand(captures.length)];
    const other = captures[rand(captures.length)];
    if (c === undefined || other === undefined) continue;
    const mutated = mutate(c.ascii, other.ascii, [0], rand);
    let outcome: string;
    try {
      const records = parseAsciiList(mutated);
      outcome = records.length > 0 ? 'parsed' : 'empty';
    } catch (e) {
      outcome = expectCodecError(e, `ASCII mutation ${i}`);
    }
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  process.stdout.write(`# ASCII fuzz outcomes ${JSON.stringify(Object.fromEntries(outcomes))}\n`);
  assert.ok((outcomes.get('parsed') ?? 0) > 100);
  assert.ok((outcomes.get('IMA_BAD_ASCII') ?? 0) > 100);
});
