/**
 * The TPM proxy (hw/tpm-proxy.ts) on a real swtpm: several clients at once get answers and PCR 10
 * ends where the extends, applied as whole commands, put it; a client's leftover objects are
 * flushed when it goes, and never another client's; tpm2-tools reach it through tpm2-tss's swtpm
 * TCTI and read the PCR our client reads; the control port answers as documented.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';
import { controlAnswer, startTpmProxy, type TpmProxy } from '../../hw/tpm-proxy.js';
import { toHex } from '../../src/ima/index.js';
import { Tpm } from '../../src/tpm/index.js';

/** Runs a tpm2-tools command without blocking this process, which runs the proxy it talks to. */
async function tool(command: string, args: readonly string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const status = await new Promise<number | null>((resolve) => child.once('close', resolve));
  return { status, stdout, stderr };
}

/** PCR 10 of the sha256 bank, as tpm2_pcrread prints it through `tcti`. */
async function toolsPcr10(tcti: string): Promise<string> {
  const r = await tool('tpm2_pcrread', ['-T', tcti, 'sha256:10']);
  assert.equal(r.status, 0, r.stderr);
  const value = /^\s*10\s*:\s*0x([0-9A-Fa-f]{64})\s*$/m.exec(r.stdout)?.[1];
  assert.ok(value !== undefined, `no PCR 10 in: ${r.stdout}`);
  return value.toLowerCase();
}

async function pcr10(tpm: Tpm): Promise<string> {
  const [v] = await tpm.pcrRead([{ bank: 'sha256', pcr: 10 }]);
  return toHex(v?.value ?? new Uint8Array());
}

/** Resolves once the proxy has flushed what a departed client left (the flush follows the close). */
async function transientsSettle(tpm: Tpm, expected: number): Promise<number[]> {
  for (let i = 0; i < 200; i++) {
    const handles = await tpm.transientHandles();
    if (handles.length === expected) return handles;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return tpm.transientHandles();
}

describe('TPM proxy on swtpm', () => {
  let swtpm: SwtpmInstance;
  let proxy: TpmProxy;

  before(async () => {
    swtpm = await startSwtpm();
    proxy = await startTpmProxy(swtpm.host, swtpm.port);
  });

  after(async () => {
    await proxy?.close();
    await swtpm?.stop();
  });

  it('serves two clients at once; PCR 10 = the chain of every extend', async () => {
    const extender = Tpm.open(proxy.address);
    const reader = Tpm.open(proxy.address);
    try {
      const before = proxy.commands();
      const digests = Array.from({ length: 200 }, (_, i) => createHash('sha256').update(`record ${i}`).digest());
      const reads: string[] = [];
      await Promise.all([
        (async () => {
          for (const d of digests) await extender.pcrExtend(10, { sha256: d });
        })(),
        (async () => {
          for (let i = 0; i < 50; i++) reads.push(await pcr10(reader));
        })(),
      ]);
      let expected: Buffer = Buffer.alloc(32);
      const chain = [toHex(expected)];
      for (const d of digests) {
        expected = createHash('sha256').update(expected).update(d).digest();
        chain.push(toHex(expected));
      }
      assert.equal(await pcr10(reader), toHex(expected));
      // every read saw a whole prefix of the extends: commands are never interleaved mid-frame
      for (const r of reads) assert.ok(chain.includes(r), `read ${r} is not a prefix state`);
      assert.equal(proxy.commands() - before, 200 + 50 + 1);
    } finally {
      await extender.close();
      await reader.close();
    }
  });

  it('a client that disconnects mid-command does not stall the others', async () => {
    const port = Number(proxy.address.split(':').pop());
    const rude = connect({ host: '127.0.0.1', port });
    await new Promise((r) => rude.once('connect', r));
    rude.write(new Uint8Array([0x80, 0x01, 0x00, 0x00, 0x00, 0x40])); // a header promising 64 bytes
    rude.destroy();
    const tpm = Tpm.open(proxy.address);
    try {
      const [v] = await tpm.pcrRead([{ bank: 'sha256', pcr: 0 }]);
      assert.equal(toHex(v?.value ?? new Uint8Array()), '00'.repeat(32));
    } finally {
      await tpm.close();
    }
  });

  it('flushes the objects a client leaves when it disconnects, as tpmrm does', async () => {
    const observer = Tpm.open(proxy.address);
    const careless = Tpm.open(proxy.address);
    try {
      assert.deepEqual(await observer.transientHandles(), []);
      const ak = await careless.createAk();
      assert.deepEqual(await observer.transientHandles(), [ak.handle]);
      await careless.close(); // no FlushContext
      assert.deepEqual(await transientsSettle(observer, 0), []);
    } finally {
      await observer.close();
      await careless.close();
    }
  });

  it("never flushes another client's object, even one that reuses a departed client's handle", async () => {
    const first = Tpm.open(proxy.address);
    const second = Tpm.open(proxy.address);
    try {
      // A hash sequence (Part 3 §17.4), which TPM2_SequenceComplete (§17.6) flushes by itself: the
      // proxy never sees a FlushContext for it.
      const started = await first.transport.send(Uint8Array.of(0x80, 0x01, 0, 0, 0, 0x0e, 0, 0, 0x01, 0x86, 0, 0, 0, 0x0b));
      assert.equal(toHex(started.subarray(6, 10)), '00000000');
      const gone = started.subarray(10, 14);
      const password = [0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0];
      const completed = await first.transport.send(Uint8Array.of(0x80, 0x02, 0, 0, 0, 0x21, 0, 0, 0x01, 0x3e, ...gone, ...password, 0, 0, 0x40, 0, 0, 7));
      assert.equal(toHex(completed.subarray(6, 10)), '00000000');
      const kept = await second.createAk();
      assert.equal(kept.handle.toString(16), toHex(gone), 'swtpm hands out the freed handle again');
      await first.close();
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(await second.transientHandles(), [kept.handle]);
      assert.equal(toHex((await second.readPublic(kept.handle)).name), toHex(kept.name));
      await second.flush(kept.handle);
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('tpm2-tools through the printed TCTI read the PCR 10 our client reads', async () => {
    const tpm = Tpm.open(proxy.address);
    try {
      await tpm.pcrExtend(10, { sha256: createHash('sha256').update('tools').digest() });
      // Our client holds its connection open meanwhile: swtpm alone would make the tool wait.
      assert.equal(await toolsPcr10(proxy.tcti), await pcr10(tpm));
    } finally {
      await tpm.close();
    }
  });

  it("a tool's leftover object is flushed when the next tool starts (its TCTI announces itself)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'imakeep-proxy-'));
    const observer = Tpm.open(proxy.address);
    try {
      const made = await tool('tpm2_createprimary', ['-T', proxy.tcti, '-C', 'o', '-G', 'ecc', '-c', join(dir, 'primary.ctx')]);
      assert.equal(made.status, 0, made.stderr);
      assert.equal((await observer.transientHandles()).length, 1, 'tpm2_createprimary leaves its primary loaded');
      await toolsPcr10(proxy.tcti);
      assert.deepEqual(await transientsSettle(observer, 0), []);
    } finally {
      await observer.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('TPM proxy control port', () => {
  const message = (...words: number[]): Uint8Array => Uint8Array.from(words.flatMap((w) => [w >>> 24, (w >>> 16) & 0xff, (w >>> 8) & 0xff, w & 0xff]));

  it('answers GET_CAPABILITY with SET_LOCALITY only; SET_LOCALITY 0 succeeds and starts a TCTI client', () => {
    let started = 0;
    assert.equal(toHex(controlAnswer(message(1), () => started++)), '0000000000000008');
    assert.equal(toHex(controlAnswer(Uint8Array.of(0, 0, 0, 5, 0), () => started++)), '00000000');
    assert.equal(started, 1);
  });

  it('refuses other localities, what would reset or stop the shared TPM, and malformed messages', () => {
    const never = (): void => assert.fail('no TCTI client starts');
    assert.equal(toHex(controlAnswer(Uint8Array.of(0, 0, 0, 5, 3), never)), '0000003d', 'TPM_BAD_LOCALITY');
    assert.equal(toHex(controlAnswer(message(2, 1), never)), '0000000a', 'CMD_INIT: TPM_BAD_ORDINAL');
    assert.equal(toHex(controlAnswer(message(3), never)), '0000000a', 'CMD_SHUTDOWN: TPM_BAD_ORDINAL');
    assert.equal(toHex(controlAnswer(message(14), never)), '0000000a', 'CMD_STOP: TPM_BAD_ORDINAL');
    assert.equal(toHex(controlAnswer(Uint8Array.of(0, 0, 0, 5), never)), '00000003', 'SET_LOCALITY without its byte');
    assert.equal(toHex(controlAnswer(Uint8Array.of(0, 0), never)), '00000003', 'shorter than a code');
  });
});
