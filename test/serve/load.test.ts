/**
 * The API under load (issue 11), the fast version of test/slow/serve-load.test.ts: 100 slow
 * connections (slowloris clients and readers that stopped reading) plus a steady stream of status
 * requests. Every status request is answered (short requests have their own share; a connection
 * with no request in progress makes room), every slow connection gets an HTTP answer (200 for the
 * streams admitted, 503 SERVE_BUSY with Retry-After for the rest), none a reset. Also: every
 * method but GET is 405 with a code, CONNECT included.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { CollectedDevice } from './_collected.js';
import { errorCode, get } from './_http.js';
import { loadRun } from './_load.js';
import { ServedDevice } from './_served.js';
import { startApiServer } from '../../src/serve/index.js';

describe('the API under load', () => {
  let served: ServedDevice;
  let device: CollectedDevice;
  let socket: string;

  before(async () => {
    served = await ServedDevice.start('load', { chunkRecords: 200 });
    device = served.device;
    // A log much larger than what socket buffers hold: a reader that stops reading holds its stream.
    for (let i = 0; i < 6; i++) await device.cycle(1500);
    await served.serve({ tail: device.tail() }, 'socket', { headersTimeoutMs: 20_000, requestTimeoutMs: 30_000, idleTimeoutMs: 20_000 });
    socket = join(served.work, 'api.sock');
  });

  after(async () => {
    await served?.close();
  });

  it('100 slow connections and a steady stream of status requests: every status request answered, every slow connection answered', async (t) => {
    // The bound is generous (the first answers wait while 16 streams fill their buffers on a
    // loaded machine): the point is that none waits forever, as all did behind a full connection table.
    const report = await loadRun({ socket, slowloris: 50, slowReaders: 50, statusRequests: 20, statusEveryMs: 50, answerWithinMs: 20_000 });
    t.diagnostic(JSON.stringify(report));
    assert.equal(report.statusAnswered, report.statusSent, 'every status request answered 200');
    assert.equal(report.slowAnswers.none ?? 0, 0, 'no connection closed without an HTTP answer');
    // 16 log streams at once (the default share); the other readers are told to come back.
    assert.equal(report.slowAnswers['200'], 16);
    assert.equal((report.busyCodes.SERVE_BUSY ?? 0) + (report.slowAnswers['408'] ?? 0), 100 - 16 - (report.slowAnswers.pending ?? 0));
    assert.equal(report.retryAfter, report.busyCodes.SERVE_BUSY);
    assert.ok((report.busyCodes.SERVE_BUSY ?? 0) >= 34, 'the 34 readers past the stream share got SERVE_BUSY');
  });

  it('after the load: the held streams and connections are gone, a status request is answered', async () => {
    const status = await get({ socket }, '/v1/status');
    assert.equal(status.status, 200);
  });

  it('every method but GET: 405 SERVE_METHOD_NOT_ALLOWED with Allow: GET, on any path', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD']) {
      for (const path of ['/v1/status', '/nowhere']) {
        const reply = await get({ socket }, path, method);
        assert.equal(reply.status, 405, `${method} ${path}`);
        assert.equal(reply.headers.allow, 'GET');
        if (method !== 'HEAD') assert.equal(errorCode(reply), 'SERVE_METHOD_NOT_ALLOWED');
      }
    }
  });

  it('a reader slower than the minimum rate is cut by its own timer (before the idle timeout), and counted', async () => {
    // Its own server (on its own socket) with a rate no client that stopped reading reaches.
    const slowSocket = join(served.work, 'slow.sock');
    const server = await startApiServer({ store: device.store, tail: device.tail() }, { socket: slowSocket }, { idleTimeoutMs: 60_000, minReadBytesPerSecond: 10 * 1024 * 1024, slowReaderWindowMs: 300 });
    try {
      const head = await new Promise<string>((resolve) => {
        const c = connect(slowSocket);
        let got = '';
        c.on('data', (d: Buffer) => {
          got += d.toString('latin1').slice(0, 100);
          c.pause(); // reads the head, then nothing
        });
        c.on('error', () => undefined);
        c.write('GET /v1/log?format=ascii&bank=sha256 HTTP/1.1\r\nHost: x\r\n\r\n');
        // The paused client does not see the close: watch the server's streams instead.
        const poll = setInterval(() => {
          if (got.length > 0 && server.handler.activeStreams === 0) {
            clearInterval(poll);
            c.destroy();
            resolve(got);
          }
        }, 50);
      });
      assert.match(head, /^HTTP\/1\.1 200 /);
      assert.match((await get({ socket: slowSocket }, '/metrics')).body.toString(), /imakeep_http_slow_readers_cut_total 1\n/);
    } finally {
      await server.close();
    }
  });

  it('CONNECT: 405 SERVE_METHOD_NOT_ALLOWED, then the connection closes', async () => {
    const reply = await new Promise<string>((resolve) => {
      const c = connect(socket);
      let got = '';
      c.on('data', (d: Buffer) => (got += d.toString('latin1')));
      c.on('error', () => undefined);
      c.on('close', () => resolve(got));
      c.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    });
    assert.match(reply, /^HTTP\/1\.1 405 Method Not Allowed\r\n/);
    assert.match(reply, /\r\nAllow: GET\r\n/);
    assert.match(reply, /"code":"SERVE_METHOD_NOT_ALLOWED"/);
  });
});
