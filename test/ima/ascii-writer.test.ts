/**
 * AsciiListWriter, what serving formats the ASCII list with (src/serve/log-stream.ts): the lines of
 * a real kernel's list written in batches are the kernel's own ASCII file byte for byte, each
 * `take()` is the caller's copy (writing the next batch into the reused buffer leaves it as it
 * was), and the `%2d` PCR column matches printf for every index.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AsciiListWriter, BinaryListParser, formatAsciiLine, parseBinaryList, type ParsedRecord } from '../../src/ima/index.js';
import { allCaptures } from './_fixtures.js';

test('batches written by AsciiListWriter are the kernel ASCII list, each take a copy of its own', () => {
  for (const c of allCaptures()) {
    const writer = new AsciiListWriter({}, 256);
    const taken: Uint8Array[] = [];
    const snapshots: string[] = [];
    let n = 0;
    new BinaryListParser().pushEach(c.binary, (record) => {
      writer.line(record, n);
      if (++n % 7 === 0) {
        const bytes = writer.take();
        taken.push(bytes);
        snapshots.push(Buffer.from(bytes).toString('hex'));
      }
    });
    taken.push(writer.take());
    snapshots.push(Buffer.from(taken.at(-1) ?? new Uint8Array(0)).toString('hex'));
    assert.equal(n, c.count, c.name);
    assert.deepEqual(Buffer.concat(taken), Buffer.from(c.ascii), `${c.name}: the kernel's ASCII list`);
    assert.deepEqual(taken.map((b) => Buffer.from(b).toString('hex')), snapshots, `${c.name}: a take is not overwritten by later lines`);
  }
});

test('the PCR column is printf %2d of the index as an int, and the text form equals the bytes', () => {
  const record = parseBinaryList(allCaptures()[0]?.binary ?? new Uint8Array(0))[1] as ParsedRecord;
  for (const [pcr, column] of [
    [0, ' 0'],
    [9, ' 9'],
    [10, '10'],
    [23, '23'],
    [24, '24'],
    [100, '100'],
    [0xffffffff, '-1'],
  ] as const) {
    const writer = new AsciiListWriter();
    writer.line({ ...record, pcr });
    const line = Buffer.from(writer.take()).toString('latin1');
    assert.equal(line.slice(0, line.indexOf(' ', 2)), column, `pcr ${pcr}`);
    assert.equal(formatAsciiLine({ ...record, pcr }), line, `pcr ${pcr}: text form`);
  }
});
