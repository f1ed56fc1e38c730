/**
 * Hostile and slow clients against the real server: garbage on a raw socket, oversized headers
 * and request targets, bad methods and parameters, a slowloris client, a client that stops
 * reading a large log (it stalls only its own stream: memory stays bounded, the store keeps
 * taking writes, other requests are answered, and the idle timeout ends it). TCP: loopback only
 * without TLS; with TLS a client certificate is required.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ServeError, startApiServer, type ApiServer } from '../../src/serve/index.js';
import type { CollectedDevice } from './_collected.js';
import { errorCode, get, raw, type Target } from './_http.js';
import { ServedDevice } from './_served.js';
import { httpsGet, makeTlsMaterial } from './_tls.js';

describe('hostile clients', () => {
  let served: ServedDevice;
  let device: CollectedDevice;
  let server: ApiServer;
  let work: string;
  let socket: string;
  let target: Target;

  before(async () => {
    served = await ServedDevice.start('hostile', { chunkRecords: 200 });
    ({ device, work } = served);
    for (let i = 0; i < 6; i++) await device.cycle(1500);
    ({ server, target } = await served.serve({ tail: device.tail() }, 'socket', { headersTimeoutMs: 1000, requestTimeoutMs: 2000, idleTimeoutMs: 1000 }));
    socket = join(work, 'api.sock');
  });

  after(async () => {
    await served?.close();
  });

  it('garbage on a raw socket gets 400 and the connection closed; the server still answers', async () => {
    for (const junk of ['\x00\xff\xfe garbage\r\n\r\n', 'GET\r\n\r\n', 'GET / HTTP/9.9\r\n\r\n', `${'A'.repeat(5000)}\r\n\r\n`]) {
      const reply = await raw({ socket }, Buffer.from(junk, 'latin1'));
      assert.match(reply, /^HTTP\/1\.1 400 /, JSON.stringify(junk.slice(0, 20)));
      assert.match(reply, /\r\n\r\n\{"error":\{"code":"SERVE_BAD_REQUEST"/);
    }
    // A request target that is not a URL: the API's own 400.
    const notUrl = await raw({ socket }, 'GET http://[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(notUrl, /^HTTP\/1\.1 400 /);
    assert.match(notUrl, /"code":"SERVE_BAD_REQUEST"/);
    assert.equal((await get(target, '/v1/status')).status, 200);
  });

  it('headers over 8 KiB: 431; a request target over 2 KiB: 414 with a JSON error', async () => {
    const big = await raw({ socket }, `GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(9000)}\r\n\r\n`);
    assert.match(big, /^HTTP\/1\.1 431 /);
    assert.match(big, /"code":"SERVE_HEADERS_TOO_LARGE"/);
    const long = await get(target, `/v1/log?from=0&x=${'1'.repeat(3000)}`);
    assert.equal(long.status, 414);
    assert.equal(errorCode(long), 'SERVE_URI_TOO_LONG');
  });

  it('unknown paths 404, other methods 405 with Allow, bad parameters 400', async () => {
    const notFound = await get(target, '/v1/nothing');
    assert.equal(notFound.status, 404);
    assert.equal(errorCode(notFound), 'SERVE_NOT_FOUND');
    const post = await get(target, '/v1/log', 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET');
    for (const query of ['from=-1', 'from=abc', 'from=1.5', 'from=99999999999999999999', 'from=9007199254740993', 'boot=4294967296x', 'boot=4294967296', 'from=1&from=2', 'frm=1', 'from=']) {
      const reply = await get(target, `/v1/log?${query}`);
      assert.equal(reply.status, 400, query);
      assert.equal(errorCode(reply), 'SERVE_BAD_PARAMETER', query);
    }
  });

  it('a slowloris client (one header byte every 300 ms) is cut off after the headers timeout', async () => {
    const started = Date.now();
    const closed = new Promise<number>((resolve) => {
      const c = connect(socket);
      c.write('GET /v1/status HTTP/1.1\r\nHost: x\r\n');
      const drip = setInterval(() => c.write('X'), 300);
      c.on('close', () => {
        clearInterval(drip);
        resolve(Date.now() - started);
      });
      c.on('error', () => undefined);
    });
    const ms = await closed;
    assert.ok(ms >= 900 && ms < 4000, `closed after ${ms} ms`);
  });

  it('a client that stops reading stalls only its stream: bounded bytes, the store keeps writing, the idle timeout ends it', async () => {
    const sentLog = async (): Promise<number> => {
      const metrics = (await get(target, '/metrics')).body.toString();
      return Number(/imakeep_http_sent_bytes_total\{route="log"\} (\d+)/.exec(metrics)?.[1] ?? 0);
    };
    const sentBefore = await sentLog();
    const before = server.handler.activeStreams;
    let received = 0;
    const c = connect(socket);
    c.on('error', () => undefined);
    c.write('GET /v1/log?format=ascii&bank=sha256 HTTP/1.1\r\nHost: x\r\n\r\n');
    c.once('data', (d: Buffer) => {
      received += d.length;
      c.pause(); // read one piece, then nothing more
    });
    await sleep(300);
    assert.equal(server.handler.activeStreams, before + 1);
    // Meanwhile: the collector's writes go on and other clients are served.
    const stored = await device.store.storedCount(device.boot);
    await device.cycle(50);
    assert.equal(await device.store.storedCount(device.boot), stored + 50);
    const status = await get(target, '/v1/status');
    assert.equal(status.status, 200);
    // The idle timeout (1 s) ends the stalled stream on the server side (the paused client does
    // not read, so it would not even see the close).
    const deadline = Date.now() + 5000;
    while (server.handler.activeStreams !== before && Date.now() < deadline) await sleep(50);
    c.destroy();
    assert.equal(server.handler.activeStreams, before);
    const stalled = (await sentLog()) - sentBefore;
    assert.match((await get(target, '/metrics')).body.toString(), /imakeep_http_aborted_streams_total 1/);
    const whole = (await get(target, '/v1/log?format=ascii&bank=sha256')).body.length;
    // What the stalled stream produced is what the socket buffers hold (~0.5 MB here), not the log.
    assert.ok(received > 0 && stalled < 1024 * 1024 && whole > 2 * stalled, `stalled stream produced ${stalled} of ${whole} bytes`);
  });

  it('plain TCP on a non-loopback address is refused', async () => {
    await assert.rejects(startApiServer({ store: device.store }, { host: '0.0.0.0', port: 0 }), (e: unknown) => e instanceof ServeError && e.code === 'SERVE_INSECURE_BIND');
  });

  it('a live socket is not taken over; a stale one (nobody listening) is replaced', async () => {
    await assert.rejects(startApiServer({ store: device.store }, { socket }), (e: unknown) => e instanceof ServeError && e.code === 'SERVE_ADDRESS_IN_USE');
    const stale = join(work, 'stale.sock');
    // A socket file left by a server that was killed (SIGKILL: nothing unlinked it).
    const killed = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    assert.equal(killed.signal, 'SIGKILL');
    assert.ok(statSync(stale).isSocket());
    const again = await startApiServer({ store: device.store }, { socket: stale });
    try {
      assert.equal((await get({ socket: stale }, '/v1/status')).status, 200);
    } finally {
      await again.close();
    }
  });

  it('TLS: a client certificate signed by the CA is required', async (t) => {
    if (spawnSync('openssl', ['version']).status !== 0) {
      t.skip('openssl is not installed');
      return;
    }
    const pki = makeTlsMaterial(work, 'tls');
    const tls = await startApiServer({ store: device.store }, { host: '127.0.0.1', port: 0, tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca } });
    try {
      const port = Number(new URL(tls.address).port);
      const call = async (withCert: boolean): Promise<number> =>
        (await httpsGet(port, '/v1/status', pki.ca, withCert ? { cert: pki.clientCert, key: pki.clientKey } : undefined)).status;
      assert.equal(await call(true), 200);
      // TLS 1.3: the server asks for a certificate and, given none, ends with alert 116 (certificate_required).
      await assert.rejects(call(false), { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' });
    } finally {
      await tls.close();
    }
  });
});
