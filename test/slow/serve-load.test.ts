/**
 * The API under heavier load (issue 11): 200 slow connections (slowloris clients and readers that
 * stopped reading) plus a steady stream of 100 status requests; then 200 concurrent readers of the
 * whole log. Every status request is answered, no connection is reset without an HTTP answer: a
 * reader is served (200) or told to come back (503 SERVE_BUSY with Retry-After).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { errorCode, get, type Reply } from '../serve/_http.js';
import { loadRun } from '../serve/_load.js';
import { ServedDevice } from '../serve/_served.js';

describe('the API under heavy load', () => {
  let served: ServedDevice;
  let socket: string;

  before(async () => {
    served = await ServedDevice.start('load-slow', { chunkRecords: 200 });
    for (let i = 0; i < 6; i++) await served.device.cycle(1500);
    await served.serve({ tail: served.device.tail() }, 'socket', { headersTimeoutMs: 30_000, requestTimeoutMs: 60_000, idleTimeoutMs: 30_000 });
    socket = join(served.work, 'api.sock');
  });

  after(async () => {
    await served?.close();
  });

  it('200 slow connections and 100 status requests: every status request answered, every slow connection answered', async (t) => {
    const report = await loadRun({ socket, slowloris: 100, slowReaders: 100, statusRequests: 100, statusEveryMs: 50, answerWithinMs: 30_000 });
    t.diagnostic(JSON.stringify(report));
    assert.equal(report.statusAnswered, report.statusSent);
    assert.equal(report.slowAnswers.none ?? 0, 0, 'no connection closed without an HTTP answer');
    assert.equal(report.slowAnswers['200'], 16);
    assert.equal(report.retryAfter, report.busyCodes.SERVE_BUSY);
  });

  it('200 concurrent readers of the whole log: each is served or told SERVE_BUSY, none reset', async (t) => {
    const replies = await Promise.allSettled(Array.from({ length: 200 }, () => get({ socket }, '/v1/log?format=ascii&bank=sha256')));
    const reset = replies.filter((r) => r.status === 'rejected').length;
    const answered = replies.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const byStatus = (s: number): Reply[] => answered.filter((r) => r.status === s);
    t.diagnostic(`200: ${byStatus(200).length}, 503: ${byStatus(503).length}, reset: ${reset}`);
    assert.equal(reset, 0);
    assert.equal(byStatus(200).length + byStatus(503).length, 200);
    for (const busy of byStatus(503)) {
      assert.equal(errorCode(busy), 'SERVE_BUSY');
      assert.equal(busy.headers['retry-after'], '1');
    }
    const whole = byStatus(200)[0]?.body.length ?? 0;
    assert.ok(whole > 0 && byStatus(200).every((r) => r.body.length === whole), 'every served reader got the whole log');
  });
});
