/**
 * Self-enrollment on the fleet over HTTP, against swtpms manufactured with EK certificates by
 * swtpm's local CA: the challenge survives a fleet restart and is answered days later; the device
 * gets a bearer token its routes then require; an EK certificate from another CA, a refused
 * device, another TPM claiming an enrolled id, a replayed answer, a late answer and a fleet
 * without `--ca` are each refused with their code; manual approval and pre-approval; off loopback
 * only TLS, with the operator's token for the operator's routes.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startSwtpm, swtpmCaDirectory, type SwtpmInstance } from '../../hw/swtpm.js';
import { answerEnrollChallenge, createEnrollRequest, decodeEnrollChallenge, encodeEnrollAnswer, encodeEnrollRequest, loadCaDirectory, type EnrollChallenge } from '../../src/enroll/index.js';
import { FleetService, startFleet, type Fleet, type FleetAuth, type FleetEnrollmentOptions } from '../../src/fleet/index.js';
import { FleetHandler } from '../../src/testing/index.js';
import { ServeError, startHttpServer, type BindAddress } from '../../src/serve/index.js';
import { Tpm } from '../../src/tpm/index.js';
import { makeTlsMaterial } from '../serve/_tls.js';
import { call, errorOf, type FleetReply } from './_fleet.js';

const DAY_MS = 24 * 3600 * 1000;

let swtpm: SwtpmInstance;
let otherSwtpm: SwtpmInstance;
let tpm: Tpm;
let otherTpm: Tpm;
let work: string;
let caDir: string;

before(async () => {
  [swtpm, otherSwtpm] = await Promise.all([startSwtpm({ ekCertificates: true }), startSwtpm({ ekCertificates: true })]);
  tpm = Tpm.open(swtpm.address);
  otherTpm = Tpm.open(otherSwtpm.address);
  work = mkdtempSync(join(tmpdir(), 'imakeep-fleet-enroll-'));
  caDir = swtpmCaDirectory(join(work, 'ca'));
  fleet = await openFleet();
});

after(async () => {
  await fleet?.close();
  await tpm?.close();
  await otherTpm?.close();
  await Promise.all([swtpm?.stop(), otherSwtpm?.stop()]);
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

/** The fleet's clock: real time unless a test moves it (a device answering days later). */
let clock: Date | undefined;
const now = (): Date => clock ?? new Date();

/** The fleet (PGlite under `work/fleet`, swtpm's local CA as `--ca`), opened once more by the restart test. */
let fleet: Fleet;
const openFleet = (): Promise<Fleet> => startFleet({ data: join(work, 'fleet'), listen: { host: '127.0.0.1', port: 0 }, ca: caDir, now });

/**
 * Another face of the same database (one PGlite per test file: each open costs seconds): a
 * service with other enrollment settings behind its own listener.
 */
async function face(enrollment: FleetEnrollmentOptions, listen: BindAddress = { host: '127.0.0.1', port: 0 }, auth: FleetAuth = { trustedNetwork: true }): Promise<{ address: string; close(): Promise<void> }> {
  const service = await FleetService.open(fleet.service.repository, { enrollment, now });
  return startHttpServer(new FleetHandler(service, {}, auth).listener, listen);
}

async function requestFor(t: Tpm, deviceId: string): Promise<string> {
  return encodeEnrollRequest(await createEnrollRequest(t, { deviceId, kernelBootId: '0b7e4c1d-0000-4000-8000-000000000001' }));
}

async function enrollRequest(url: string, body: string): Promise<FleetReply> {
  return call(url, '/v1/enroll', { body, type: 'application/json' });
}

function challengeOf(reply: FleetReply): EnrollChallenge {
  assert.equal(reply.status, 201, JSON.stringify(reply.body));
  return decodeEnrollChallenge(JSON.stringify(reply.body));
}

async function answer(url: string, t: Tpm, challenge: EnrollChallenge): Promise<FleetReply> {
  const body = encodeEnrollAnswer(await answerEnrollChallenge(t, challenge));
  return call(url, `/v1/enroll/${challenge.challengeId}/answer`, { body, type: 'application/json' });
}

function withToken(token: string): { authorization: string } {
  return { authorization: `Bearer ${token}` };
}

/** One request with headers; JSON body back. */
async function callWith(url: string, path: string, headers: Record<string, string>, init: { method?: string; body?: string } = {}): Promise<FleetReply> {
  const res = await fetch(`${url}${path}`, { method: init.method ?? 'GET', headers: { 'content-type': 'application/json', ...headers }, ...(init.body === undefined ? {} : { body: init.body }) });
  const text = await res.text();
  return { status: res.status, body: text.length === 0 ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

describe('fleet self-enrollment', () => {
  it('request, fleet restart, answer five days later: approved with the AK the TPM proved and a bearer token its routes require; 31 days is too late', async () => {
    let enrolledToken = '';
    const request = await requestFor(tpm, 'dev-1');
    const challenge = challengeOf(await enrollRequest(fleet.address, request));
    assert.equal(challenge.deviceId, 'dev-1');
    const late = challengeOf(await enrollRequest(fleet.address, await requestFor(tpm, 'dev-late')));
    // A wrong proof (one hex digit changed) for a third challenge.
    const third = challengeOf(await enrollRequest(fleet.address, await requestFor(tpm, 'dev-late')));
    const proof = await answerEnrollChallenge(tpm, third);
    const forged = await call(fleet.address, `/v1/enroll/${third.challengeId}/answer`, {
      body: encodeEnrollAnswer({ ...proof, authTag: `${proof.authTag[0] === '0' ? '1' : '0'}${proof.authTag.slice(1)}` }),
      type: 'application/json',
    });
    assert.equal(forged.status, 403);
    assert.equal(errorOf(forged).code, 'ENROLL_ACTIVATION_FAILED');
    await fleet.close();
    // The device was offline for days: the fleet kept the challenges in its database.
    fleet = await openFleet();
    try {
      clock = new Date(Date.now() + 5 * DAY_MS);
      const enrolled = await answer(fleet.address, tpm, challenge);
      assert.equal(enrolled.status, 200, JSON.stringify(enrolled.body));
      assert.equal(enrolled.body.deviceId, 'dev-1');
      assert.equal(enrolled.body.enrollment, 'approved');
      enrolledToken = String(enrolled.body.token);
      clock = new Date(Date.now() + 31 * DAY_MS);
      const tooLate = await answer(fleet.address, tpm, late);
      assert.equal(tooLate.status, 410);
      assert.equal(errorOf(tooLate).code, 'ENROLL_CHALLENGE_EXPIRED');
    } finally {
      clock = undefined;
    }
    assert.equal((await call(fleet.address, '/v1/devices/dev-late')).status, 404);
    const token = enrolledToken;
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    const view = (await call(fleet.address, '/v1/devices/dev-1')).body;
    assert.equal(view.enrollment, 'approved');
    assert.equal((view.keys as { ak: string }).ak, Buffer.from(JSON.parse(request).aik_tpm as string, 'base64').toString('hex'));
    assert.equal((view.keys as { ekCertificate: boolean }).ekCertificate, true);
    // Each challenge is answered once.
    const again = await answer(fleet.address, tpm, challenge);
    assert.equal(again.status, 404);
    assert.equal(errorOf(again).code, 'ENROLL_UNKNOWN_CHALLENGE');
    // The device's routes need its token now, even on loopback.
    for (const headers of [{}, withToken('x'.repeat(43))]) {
      const refused = await callWith(fleet.address, '/v1/devices/dev-1/ack', headers);
      assert.equal(refused.status, 401);
      assert.equal(errorOf(refused).code, 'FLEET_UNAUTHORIZED');
    }
    const ack = await callWith(fleet.address, '/v1/devices/dev-1/ack', withToken(token));
    assert.equal(ack.status, 404); // authenticated: no acknowledgement yet
    assert.equal(errorOf(ack).code, 'FLEET_UNKNOWN_DEVICE');
    const nonce = await callWith(fleet.address, '/v1/devices/dev-1/challenge', withToken(token), { method: 'POST', body: '' });
    assert.equal(nonce.status, 200);
    assert.match(String(nonce.body.nonce), /^[0-9a-f]{64}$/);
    // Re-enrolling from the same TPM: a new token, the old one stops working.
    const renewed = await answer(fleet.address, tpm, challengeOf(await enrollRequest(fleet.address, await requestFor(tpm, 'dev-1'))));
    assert.equal(renewed.status, 200);
    assert.equal((await callWith(fleet.address, '/v1/devices/dev-1/ack', withToken(token))).status, 401);
    // Another TPM claiming the enrolled id.
    const claim = await enrollRequest(fleet.address, await requestFor(otherTpm, 'dev-1'));
    assert.equal(claim.status, 409);
    assert.equal(errorOf(claim).code, 'FLEET_ENROLL_CONFLICT');
  });

  it('an EK certificate of another CA, a refused device, bad request files and a fleet without --ca are refused with their codes', async () => {
    const otherCa = join(work, 'other-ca');
    mkdirSync(otherCa);
    copyFileSync(makeTlsMaterial(work, 'unrelated').ca, join(otherCa, 'ca.pem'));
    const strangers = await face({ anchors: await loadCaDirectory(otherCa) });
    const open = await face({});
    try {
      const chain = await enrollRequest(strangers.address, await requestFor(tpm, 'dev-2'));
      assert.equal(chain.status, 403);
      assert.equal(errorOf(chain).code, 'ENROLL_EK_CERT_CHAIN');
      const disabled = await enrollRequest(open.address, await requestFor(tpm, 'dev-2'));
      assert.equal(disabled.status, 403);
      assert.equal(errorOf(disabled).code, 'FLEET_ENROLL_DISABLED');
      const refuse = await call(fleet.address, '/v1/devices/dev-2/approval', { body: JSON.stringify({ enrollment: 'refused' }), type: 'application/json' });
      assert.equal(refuse.status, 200);
      assert.equal(refuse.body.enrollment, 'refused');
      const refused = await enrollRequest(fleet.address, await requestFor(tpm, 'dev-2'));
      assert.equal(refused.status, 403);
      assert.deepEqual([errorOf(refused).code, errorOf(refused).details.check], ['FLEET_NOT_ENROLLED', 'refused']);
      const request = JSON.parse(await requestFor(tpm, 'dev-3')) as Record<string, unknown>;
      for (const bad of ['{', '[]', JSON.stringify({ ...request, version: 9 }), JSON.stringify({ ...request, device_id: '../etc' }), JSON.stringify({ ...request, ekcert: '!!' })]) {
        const reply = await enrollRequest(fleet.address, bad);
        assert.equal(reply.status, 400, bad.slice(0, 40));
        assert.equal(errorOf(reply).code, 'ENROLL_BAD_FILE', bad.slice(0, 40));
      }
      const badApproval = await call(fleet.address, '/v1/devices/dev-2/approval', { body: '{"enrollment":"maybe"}', type: 'application/json' });
      assert.equal(badApproval.status, 400);
      assert.equal(errorOf(badApproval).code, 'SERVE_BAD_PARAMETER');
    } finally {
      await Promise.all([strangers.close(), open.close()]);
    }
  });

  it('manual approval: a proved device stays pending until approved; a pre-approved one is approved at once', async () => {
    const manual = await face({ anchors: await loadCaDirectory(caDir), approval: 'manual' });
    try {
      const pending = await answer(manual.address, tpm, challengeOf(await enrollRequest(manual.address, await requestFor(tpm, 'dev-4'))));
      assert.equal(pending.body.enrollment, 'pending');
      const approved = await call(manual.address, '/v1/devices/dev-4/approval', { body: JSON.stringify({ enrollment: 'approved' }), type: 'application/json' });
      assert.equal(approved.body.enrollment, 'approved');
      assert.equal(typeof (approved.body.keys as { ak: unknown }).ak, 'string'); // the AK it proved stays
      assert.equal((await call(manual.address, '/v1/devices/dev-5/approval', { body: JSON.stringify({ enrollment: 'approved' }), type: 'application/json' })).status, 200);
      const preApproved = await answer(manual.address, otherTpm, challengeOf(await enrollRequest(manual.address, await requestFor(otherTpm, 'dev-5'))));
      assert.equal(preApproved.body.enrollment, 'approved');
    } finally {
      await manual.close();
    }
  });
});

describe('fleet off loopback', () => {
  /** HTTPS to 127.0.0.1:`port` trusting `ca`; JSON body back. */
  function httpsCall(port: number, ca: string, path: string, init: { method?: string; body?: string; token?: string } = {}): Promise<FleetReply> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port,
          path,
          method: init.method ?? 'GET',
          ca: readFileSync(ca),
          servername: 'localhost',
          agent: false,
          headers: { 'content-type': 'application/json', ...(init.token === undefined ? {} : withToken(init.token)) },
        },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (c: Buffer) => parts.push(c));
          res.on('end', () => {
            const text = Buffer.concat(parts).toString('utf8');
            // JSON, but the key is PEM.
            resolve({ status: res.statusCode ?? 0, body: text.startsWith('{') ? (JSON.parse(text) as Record<string, unknown>) : { text } });
          });
        },
      );
      req.on('error', reject);
      req.end(init.body);
    });
  }

  it('plain HTTP off loopback is refused; over TLS devices enroll and use their token, the operator routes need the operator token', async () => {
    await assert.rejects(face({}, { host: '0.0.0.0', port: 0 }), (e: unknown) => e instanceof ServeError && e.code === 'SERVE_INSECURE_BIND');
    const tls = makeTlsMaterial(work, 'fleet-tls');
    const operatorToken = 'operator-token-0123456789abcdef';
    const remote = await face({ anchors: await loadCaDirectory(caDir) }, { host: '0.0.0.0', port: 0, tls: { cert: tls.serverCert, key: tls.serverKey } }, { trustedNetwork: false, operatorToken });
    try {
      assert.match(remote.address, /^https:\/\/0\.0\.0\.0:\d+$/);
      const port = Number(new URL(remote.address).port);
      const challenge = challengeOf(await httpsCall(port, tls.ca, '/v1/enroll', { method: 'POST', body: await requestFor(tpm, 'dev-tls') }));
      const enrolled = await httpsCall(port, tls.ca, `/v1/enroll/${challenge.challengeId}/answer`, { method: 'POST', body: encodeEnrollAnswer(await answerEnrollChallenge(tpm, challenge)) });
      assert.equal(enrolled.status, 200);
      const token = String(enrolled.body.token);
      for (const path of ['/v1/devices', '/v1/devices/dev-tls', '/v1/devices/dev-tls/log', '/metrics']) {
        for (const bearer of [undefined, token]) {
          const refused = await httpsCall(port, tls.ca, path, bearer === undefined ? {} : { token: bearer });
          assert.equal(refused.status, 401, path);
          assert.equal(errorOf(refused).code, 'FLEET_UNAUTHORIZED', path);
        }
      }
      const listed = await httpsCall(port, tls.ca, '/v1/devices', { token: operatorToken });
      assert.ok((listed.body.devices as { id: string }[]).some((d) => d.id === 'dev-tls'));
      assert.equal((await httpsCall(port, tls.ca, '/v1/devices/dev-tls/challenge', { method: 'POST', token })).status, 200);
      assert.equal((await httpsCall(port, tls.ca, '/v1/devices/dev-tls/challenge', { method: 'POST' })).status, 401);
      const key = await httpsCall(port, tls.ca, '/v1/key');
      assert.equal(key.status, 200);
      assert.match(String(key.body.text), /^-----BEGIN PUBLIC KEY-----/);
      // A device an operator enrolled by its AK (no token) cannot push off loopback without the operator's token.
      await fleet.service.enroll('dev-ak', { enrollment: 'approved', akPublic: new Uint8Array(Buffer.from((listed.body.devices as { id: string; keys: { ak: string } }[]).find((d) => d.id === 'dev-tls')?.keys.ak ?? '', 'hex')) });
      const noToken = await httpsCall(port, tls.ca, '/v1/devices/dev-ak/challenge', { method: 'POST' });
      assert.equal(noToken.status, 401);
      assert.equal(errorOf(noToken).code, 'FLEET_UNAUTHORIZED');
    } finally {
      await remote.close();
    }
  });
});
