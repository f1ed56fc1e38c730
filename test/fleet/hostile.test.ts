/**
 * Hostile clients against a real fleet (PGlite, loopback): garbage on a raw socket, oversized and
 * malformed bodies, bad JSON, wrong methods, ids that try to climb out of their path, a slowloris
 * client and one that sends its body too slowly. Each gets its typed code and status, and the
 * fleet stays up and consistent: the one enrolled device is as it was, nothing was stored.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';
import { encodeEnrollAnswer } from '../../src/enroll/index.js';
import { Tpm } from '../../src/tpm/index.js';
import { raw as rawOn } from '../serve/_http.js';
import { call, errorOf, testFleet } from './_fleet.js';

type Running = Awaited<ReturnType<typeof testFleet>>;

/** Everything the fleet on 127.0.0.1:`port` answers `data` with, until it closes. */
const raw = (port: number, data: string | Buffer): Promise<string> => rawOn({ host: '127.0.0.1', port }, data, 10_000);

/** The status and error code of a raw reply. */
function parsed(reply: string): { status: number; code: string | undefined } {
  return { status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(reply)?.[1] ?? 0), code: /"code":"([A-Z_]+)"/.exec(reply)?.[1] };
}

describe('hostile clients against the fleet', () => {
  let running: Running;
  let port: number;
  let swtpm: SwtpmInstance;
  let tpm: Tpm;

  before(async () => {
    swtpm = await startSwtpm();
    tpm = Tpm.open(swtpm.address);
    const ak = await tpm.createAk();
    await tpm.flush(ak.handle);
    running = await testFleet({ limits: { maxBundleBytes: 64 * 1024 }, serverLimits: { headersTimeoutMs: 1000, requestTimeoutMs: 3000, idleTimeoutMs: 2000 } });
    port = Number(new URL(running.url).port);
    await running.fleet.service.enroll('dev', { enrollment: 'approved', akPublic: ak.public });
  });

  after(async () => {
    await running?.stop();
    await tpm?.close();
    await swtpm?.stop();
  });

  it('garbage on a raw socket gets 400 SERVE_BAD_REQUEST and the connection closed', async () => {
    for (const junk of ['\x00\xff\xfe garbage\r\n\r\n', 'POST\r\n\r\n', 'GET / HTTP/9.9\r\n\r\n', `${'A'.repeat(5000)}\r\n\r\n`]) {
      assert.deepEqual(parsed(await raw(port, Buffer.from(junk, 'latin1'))), { status: 400, code: 'SERVE_BAD_REQUEST' }, JSON.stringify(junk.slice(0, 20)));
    }
    assert.deepEqual(parsed(await raw(port, `GET /v1/devices HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(9000)}\r\n\r\n`)), { status: 431, code: 'SERVE_HEADERS_TOO_LARGE' });
    const long = await call(running.url, `/v1/devices?after=${'a'.repeat(3000)}`);
    assert.deepEqual([long.status, errorOf(long).code], [414, 'SERVE_URI_TOO_LONG']);
  });

  it('oversized bodies: 413 with FLEET_BUNDLE_TOO_LARGE or FLEET_BODY_TOO_LARGE, before the body is read whole', async () => {
    const big = new Uint8Array(65 * 1024);
    const cbor = await call(running.url, '/v1/devices/dev/evidence', { body: big, type: 'application/cbor' });
    assert.deepEqual([cbor.status, errorOf(cbor).code], [413, 'FLEET_BUNDLE_TOO_LARGE']);
    // A frame that announces 4 GiB: refused on its length, the rest is never sent.
    const frames = parsed(await raw(port, `POST /v1/devices/dev/evidence HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.imakeep.bundles\r\nContent-Length: 1000000\r\n\r\n\xff\xff\xff\xff`));
    assert.deepEqual(frames, { status: 413, code: 'FLEET_BUNDLE_TOO_LARGE' });
    for (const path of ['/v1/enroll', '/v1/devices/dev/quote', '/v1/devices/dev/approval', `/v1/enroll/${'0'.repeat(32)}/answer`]) {
      const reply = await call(running.url, path, { body: 'x'.repeat(70 * 1024), type: 'application/json' });
      assert.deepEqual([reply.status, errorOf(reply).code], [413, 'FLEET_BODY_TOO_LARGE'], path);
    }
  });

  it('garbage bundles and bad JSON get their codes', async () => {
    const bodies: [string, string, string, number, string][] = [
      ['/v1/devices/dev/evidence', 'application/cbor', '\xa1\x63abc', 400, 'FLEET_BUNDLE_CORRUPT'],
      ['/v1/devices/dev/evidence', 'application/cbor', '', 400, 'FLEET_BUNDLE_CORRUPT'],
      ['/v1/devices/dev/evidence', 'application/vnd.imakeep.bundles', '\x00\x00\x00\x00', 400, 'FLEET_BUNDLE_CORRUPT'],
      ['/v1/devices/dev/evidence', 'application/vnd.imakeep.bundles', '\x00\x00\x00\x10abc', 400, 'FLEET_BUNDLE_CORRUPT'],
      ['/v1/devices/dev/evidence', 'text/plain', 'hello', 400, 'SERVE_BAD_PARAMETER'],
      ['/v1/devices/nobody/evidence', 'application/cbor', '\xa0', 404, 'FLEET_UNKNOWN_DEVICE'],
      ['/v1/enroll', 'application/json', '{"format":', 400, 'ENROLL_BAD_FILE'],
      ['/v1/enroll', 'application/json', '[1,2,3]', 400, 'ENROLL_BAD_FILE'],
      ['/v1/enroll', 'application/json', '{"format":"imakeep-enroll-request","version":1}', 400, 'ENROLL_BAD_FILE'],
      [`/v1/enroll/${'0'.repeat(32)}/answer`, 'application/json', 'null', 400, 'ENROLL_BAD_FILE'],
      ['/v1/devices/dev/quote', 'application/json', '{"attest":1}', 422, 'FLEET_STALE_QUOTE'],
      ['/v1/devices/dev/approval', 'application/json', '"approved"', 400, 'SERVE_BAD_PARAMETER'],
    ];
    for (const [path, type, body, status, code] of bodies) {
      const reply = await call(running.url, path, { body: Buffer.from(body, 'latin1'), type });
      assert.deepEqual([reply.status, errorOf(reply).code], [status, code], `${path} ${JSON.stringify(body)}`);
    }
    // A well-formed answer to a challenge the fleet never made.
    const unknown = await call(running.url, `/v1/enroll/${'0'.repeat(32)}/answer`, {
      body: encodeEnrollAnswer({ challengeId: '0'.repeat(32), deviceId: 'dev', authTag: 'ab'.repeat(48) }),
      type: 'application/json',
    });
    assert.deepEqual([unknown.status, errorOf(unknown).code], [404, 'ENROLL_UNKNOWN_CHALLENGE']);
  });

  it('wrong methods: 405 with Allow', async () => {
    const cases: [string, string, string][] = [
      ['GET', '/v1/enroll', 'POST'],
      ['PUT', '/v1/devices/dev/evidence', 'POST'],
      ['DELETE', '/v1/devices/dev', 'GET'],
      ['POST', '/v1/devices', 'GET'],
      ['GET', '/v1/devices/dev/approval', 'POST'],
      ['PATCH', '/metrics', 'GET'],
    ];
    for (const [method, path, allow] of cases) {
      const res = await fetch(`${running.url}${path}`, { method });
      assert.equal(res.status, 405, `${method} ${path}`);
      assert.equal(res.headers.get('allow'), allow);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'SERVE_METHOD_NOT_ALLOWED');
    }
    assert.deepEqual(parsed(await raw(port, 'CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n')), { status: 405, code: 'SERVE_METHOD_NOT_ALLOWED' });
  });

  it('ids that try to leave their path segment: 400 SERVE_BAD_PARAMETER or 404, never another resource', async () => {
    for (const path of [
      '/v1/devices/..%2F..%2Fetc%2Fpasswd/evidence',
      '/v1/devices/%2e%2e/log',
      '/v1/devices/dev/../../v1/key',
      '/v1/devices/dev/evidence/..',
      '/v1/devices/./dev',
      'http://fleet/v1/devices/dev',
      '/v1/devices/.hidden',
      '/v1/devices/a%00b',
      '/v1/devices/%ZZ',
      `/v1/devices/${'a'.repeat(129)}`,
      '/v1/enroll/..%2F..%2Fkey/answer',
      `/v1/enroll/${'G'.repeat(32)}/answer`,
    ]) {
      const reply = await raw(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      const { status, code } = parsed(reply);
      // /v1/enroll/…/answer is POST-only: the method is checked after the path.
      assert.deepEqual({ status, code }, { status: 400, code: 'SERVE_BAD_PARAMETER' }, path);
    }
    for (const path of ['/v1/devices/dev/secrets', '/v1/devices/dev/log/x', '/v1/enroll/x']) {
      const { status, code } = parsed(await raw(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
      assert.deepEqual({ status, code }, { status: 404, code: 'SERVE_NOT_FOUND' }, path);
    }
  });

  it('a slowloris client is cut off after the headers timeout; a body sent too slowly after the request timeout', async () => {
    const cutAfter = (head: string, drip: string): Promise<number> =>
      new Promise((resolve) => {
        const started = Date.now();
        const c = connect(port, '127.0.0.1');
        c.write(head);
        const timer = setInterval(() => c.write(drip), 300);
        c.on('close', () => {
          clearInterval(timer);
          resolve(Date.now() - started);
        });
        c.on('error', () => undefined);
      });
    const headers = await cutAfter('GET /v1/devices HTTP/1.1\r\nHost: x\r\n', 'X');
    assert.ok(headers >= 900 && headers < 6000, `headers: closed after ${headers} ms`);
    const body = await cutAfter('POST /v1/devices/dev/evidence HTTP/1.1\r\nHost: x\r\nContent-Type: application/cbor\r\nContent-Length: 100000\r\n\r\n', 'X');
    assert.ok(body >= 2000 && body < 10_000, `body: closed after ${body} ms`);
  });

  it('after all that the fleet answers and is as it was: one device, nothing stored, no acknowledgement', async () => {
    const list = await call(running.url, '/v1/devices');
    assert.equal(list.status, 200);
    const devices = list.body.devices as { id: string; verifiedUpTo: unknown; acknowledgements: number; enrollment: string }[];
    assert.deepEqual(
      devices.map((d) => [d.id, d.enrollment, d.verifiedUpTo, d.acknowledgements]),
      [['dev', 'approved', null, 0]],
    );
    assert.deepEqual(await running.fleet.service.repository.totals(), { devices: 1, records: 0, chunks: 0 });
    const metrics = await (await fetch(`${running.url}/metrics`)).text();
    assert.match(metrics, /^imakeep_fleet_http_requests_total\{route="evidence",status="413"\} 2$/m);
    assert.match(metrics, /^imakeep_fleet_http_requests_total\{route="evidence",status="408"\} 1$/m);
    assert.doesNotMatch(metrics, /status="500"/);
    assert.match(metrics, /^imakeep_fleet_bundles_accepted_total 0$/m);
  });
});
