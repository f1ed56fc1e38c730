/**
 * The served log equals the untrimmed kernel list byte for byte (Invariant 2), over real HTTP on a
 * unix socket and TCP: every format and bank, from any global index, across the three regions of
 * a live boot (stored and removed from the kernel; stored and still in the kernel; only in the
 * kernel), while records are removed mid-stream, and for an earlier boot. evmctl, an independent
 * implementation, accepts the served binary list against the swtpm's PCR values.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeBinaryList, formatAsciiLineBytes, toHex, type BankName, type ImaRecord } from '../../src/ima/index.js';
import { openLog, ServeError } from '../../src/serve/index.js';
import type { CollectedDevice } from './_collected.js';
import { errorCode, get, type Target } from './_http.js';
import { ServedDevice } from './_served.js';

function expected(records: readonly ImaRecord[], format: 'binary' | 'ascii', bank: BankName): Buffer {
  if (format === 'binary') return Buffer.from(encodeBinaryList(records, { bank, mode: 'native' }));
  return Buffer.concat(records.map((r) => formatAsciiLineBytes(r, { bank, mode: 'native' })));
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of chunks) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

describe('log stream over HTTP', () => {
  let served: ServedDevice;
  let device: CollectedDevice;
  let work: string;
  let socket: Target;
  let loopback: Target;

  before(async () => {
    served = await ServedDevice.start('serve-log', { chunkRecords: 40, readWindowRecords: 10 });
    ({ device, work } = served);
    for (let i = 0; i < 4; i++) await device.cycle(57 + i * 11); // stored, quoted, removed
    await device.measure(23); // stored, not quoted: still in the kernel
    await device.collect();
    await device.measure(45); // only in the kernel
    ({ target: socket } = await served.serve({ tail: device.tail() }));
    ({ target: loopback } = await served.serve({ tail: device.tail() }, 'loopback'));
  });

  after(async () => {
    await served?.close();
  });

  it('the three regions are all present (removed, stored in kernel, kernel only)', async () => {
    const all = device.records().length;
    const stored = await device.store.storedCount(device.boot);
    assert.ok(device.removed > 100 && device.removed < stored && stored < all, `${device.removed} < ${stored} < ${all}`);
  });

  it('the socket is created with mode 0660', () => {
    assert.equal(statSync(join(work, 'api.sock')).mode & 0o777, 0o660);
  });

  for (const format of ['binary', 'ascii'] as const) {
    for (const bank of ['sha1', 'sha256'] as const) {
      it(`${format} ${bank}: byte-identical from every region boundary`, async () => {
        const records = device.records();
        const stored = await device.store.storedCount(device.boot);
        const froms = [0, 1, 39, 40, 41, 100, device.removed - 1, device.removed, stored - 1, stored, records.length - 1, records.length];
        for (const from of froms) {
          const reply = await get(socket, `/v1/log?from=${from}&format=${format}&bank=${bank}`);
          assert.equal(reply.status, 200, `from=${from}: ${reply.body.toString().slice(0, 200)}`);
          assert.equal(reply.headers['x-imakeep-from'], String(from));
          const want = expected(records.slice(from), format, bank);
          assert.equal(reply.body.length, want.length, `from=${from} length`);
          assert.ok(reply.body.equals(want), `from=${from}: bytes differ`);
        }
      });
    }
  }

  it('TCP on loopback serves the same bytes as the unix socket', async () => {
    const a = await get(socket, '/v1/log?format=ascii');
    const b = await get(loopback, '/v1/log?format=ascii');
    assert.equal(b.status, 200);
    assert.ok(a.body.equals(b.body));
    assert.ok(a.body.equals(expected(device.records(), 'ascii', 'sha1')));
  });

  it('from == count is an empty log; past it, 416; unknown boot, bank, format: 404/400 with JSON codes', async () => {
    const count = device.records().length;
    const empty = await get(socket, `/v1/log?from=${count}`);
    assert.equal(empty.status, 200);
    assert.equal(empty.body.length, 0);
    const past = await get(socket, `/v1/log?from=${count + 1}`);
    assert.equal(past.status, 416);
    assert.equal(errorCode(past), 'SERVE_RANGE');
    const boot = await get(socket, '/v1/log?boot=7');
    assert.equal(boot.status, 404);
    assert.equal(errorCode(boot), 'SERVE_UNKNOWN_BOOT');
    const bank = await get(socket, '/v1/log?bank=sha512');
    assert.equal(bank.status, 404);
    assert.equal(errorCode(bank), 'SERVE_UNKNOWN_BANK');
    const format = await get(socket, '/v1/log?format=xml');
    assert.equal(format.status, 400);
    assert.equal(errorCode(format), 'SERVE_BAD_PARAMETER');
  });

  for (const signalEmpty of [true, false]) {
    it(`records removed from the kernel while a stream runs come from the store instead (tail ${signalEmpty ? 'signals' : 'does not signal'} an emptied kernel)`, async () => {
      await device.measure(90); // kernel only
      let reads = 0;
      const tail = device.tail({
        signalEmpty,
        onRead: async () => {
          // After the first kernel batch: a collector cycle stores, quotes and removes everything the kernel holds.
          if (++reads === 2) await device.runOnce();
        },
      });
      const before = device.removed;
      const log = await openLog({ store: device.store, tail }, { from: before, format: 'binary', bank: 'sha256' });
      const got = await collect(log.bytes());
      assert.ok(device.removed > before + 10, 'records were removed mid-stream');
      assert.ok(got.equals(expected(device.records().slice(before), 'binary', 'sha256')));
    });
  }

  it('a tail that skips records the store does not have is a SERVE_LOG_GAP; a tail shorter than its end just ends', async () => {
    const stored = await device.store.storedCount(device.boot);
    const lying = {
      boot: device.boot,
      end: () => Promise.resolve(stored + 60),
      async *records(from: number) {
        yield { firstIndex: from + 50, records: device.records().slice(from + 50, from + 60) };
      },
    };
    const log = await openLog({ store: device.store, tail: lying }, { from: stored - 3 });
    await assert.rejects(collect(log.bytes()), (e: unknown) => e instanceof ServeError && e.code === 'SERVE_LOG_GAP' && e.details.index === stored);
    const short = { boot: device.boot, end: () => Promise.resolve(stored + 60), async *records() {} };
    const ended = await collect((await openLog({ store: device.store, tail: short }, { from: stored - 3 })).bytes());
    assert.ok(ended.equals(expected(device.records().slice(stored - 3, stored), 'binary', 'sha1')));
  });

  it('evmctl ima_measurement accepts the served SHA-1 binary list against the swtpm PCR values', async () => {
    const reply = await get(socket, '/v1/log?format=binary');
    const listFile = join(work, 'binary_runtime_measurements');
    writeFileSync(listFile, reply.body);
    const pcrFiles: string[] = [];
    for (const bank of ['sha1', 'sha256'] as const) {
      const values = await device.tpm.pcrRead(Array.from({ length: 11 }, (_, pcr) => ({ bank, pcr })));
      const file = join(work, `pcr-${bank}.txt`);
      writeFileSync(file, values.map((v) => `PCR-${String(v.pcr).padStart(2, '0')}: ${toHex(v.value)}`).join('\n') + '\n');
      pcrFiles.push(file);
    }
    const args = ['ima_measurement', '--ignore-violations', '--pcrs', `sha1,${pcrFiles[0]}`, '--pcrs', `sha256,${pcrFiles[1]}`, listFile];
    const ok = spawnSync('evmctl', args, { encoding: 'utf8' });
    assert.equal(ok.status, 0, `evmctl: ${ok.stdout}${ok.stderr}`);
    // The oracle can say no: without the last record the list does not reach the PCR values.
    const cut = reply.body.subarray(0, reply.body.length - expected(device.records().slice(-1), 'binary', 'sha1').length);
    writeFileSync(listFile, cut);
    const refused = spawnSync('evmctl', args, { encoding: 'utf8' });
    assert.notEqual(refused.status, 0);
  });

  it('an earlier boot is served whole after a reboot', async () => {
    await device.runOnce(); // boot 0 stored whole: its kernel list ends with the reboot
    const boot0 = device.records(0).slice();
    await device.reboot();
    await device.cycle(30);
    await device.measure(7);
    // A server started after the reboot, as a restarted daemon's: its tail reads boot 1's kernel.
    const { target: after } = await served.serve({ tail: device.tail() }, 'loopback');
    const old = await get(after, '/v1/log?boot=0&format=ascii&bank=sha256');
    assert.equal(old.status, 200);
    assert.ok(old.body.equals(expected(boot0, 'ascii', 'sha256')));
    assert.ok(device.removed < device.records(1).length, 'boot 1 has records only in the kernel');
    const current = await get(after, '/v1/log?boot=1');
    assert.equal(current.status, 200);
    assert.ok(current.body.equals(expected(device.records(1), 'binary', 'sha1')), 'stored part + kernel part');
  });
});
