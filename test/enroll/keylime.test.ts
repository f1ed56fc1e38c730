/**
 * Registration with a Keylime registrar, against a small registrar written here from the
 * registrar's documented API (keylime `docs/rest_apis/2_x/registrar.rst`; keylime
 * `registrar_common.py` POST and PUT; `web/registrar_server.py` routes): it checks the body,
 * makes the credential for the AK's Name under the registered EK with src/tpm's `makeCredential`
 * (the tpm2-tools file format, which Keylime's `tpm_util.makecredential` writes), keeps
 * base64(secret) as the agent's key and activates only on auth_tag = hex(HMAC-SHA384(key, uuid)).
 * The AK it ends up holding is the one the Keylime routes quote with.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac, X509Certificate } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';
import { keylimeRegistration, registerWithKeylime, type KeylimeRegisterBody } from '../../src/enroll/index.js';
import { TPM_ALG, Tpm, encodeCredentialFile, makeCredential, newCredentialSecret, parseTpm2bPublic, tpmName, type TpmPublic } from '../../src/tpm/index.js';
import { checkEkMatchesCertificate } from '../../src/testing/index.js';

const run = promisify(execFile);
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

/** One agent as the registrar keeps it (keylime `db/registrar_db.py` RegistrarMain: key, aik_tpm, active). */
interface RegistrarAgent {
  readonly key: string;
  readonly body: KeylimeRegisterBody;
  active: boolean;
}

/** The registrar: POST /v2.x/agents/{id}, PUT /v2.x/agents/{id}[/activate], GET /v2.x/agents/{id}. */
class FakeRegistrar {
  readonly agents = new Map<string, RegistrarAgent>();
  /** Makes credentials under this EK instead of the registered one (a registrar fooled about the TPM). */
  substituteEk: TpmPublic | undefined;
  /** Answers registrations without a blob. */
  omitBlob = false;
  #server: Server | undefined;
  url = '';

  async start(): Promise<void> {
    this.#server = createServer((req, res) => void this.#handle(req, res));
    await new Promise<void>((resolve) => this.#server?.listen(0, '127.0.0.1', resolve));
    const address = this.#server.address();
    assert.ok(typeof address === 'object' && address !== null);
    this.url = `http://127.0.0.1:${address.port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.#server === undefined ? resolve() : this.#server.close(() => resolve())));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parts: Buffer[] = [];
    for await (const chunk of req) parts.push(chunk as Buffer);
    const reply = (code: number, results: object, status = code === 200 ? 'Success' : 'Error'): void => {
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ code, status, results }));
    };
    const m = /^\/v2\.\d+\/agents\/([\w.-]+)(\/activate)?$/.exec(req.url ?? '');
    const id = m?.[1];
    if (id === undefined) return reply(404, {}, 'not found');
    try {
      if (req.method === 'POST' && m?.[2] === undefined) return reply(200, this.#register(id, JSON.parse(Buffer.concat(parts).toString('utf8')) as KeylimeRegisterBody));
      if (req.method === 'PUT') return reply(...this.#activate(id, JSON.parse(Buffer.concat(parts).toString('utf8')) as { auth_tag: string }));
      if (req.method === 'GET') {
        const agent = this.agents.get(id);
        return agent?.active === true ? reply(200, { aik_tpm: agent.body.aik_tpm, ek_tpm: agent.body.ek_tpm, ekcert: agent.body.ekcert, mtls_cert: agent.body.mtls_cert, ip: agent.body.ip, port: agent.body.port, regcount: 1 }) : reply(404, {}, 'agent not active');
      }
      return reply(405, {}, 'method not allowed');
    } catch (e) {
      return reply(400, {}, e instanceof Error ? e.message : String(e));
    }
  }

  /** Registration: the body's shape, the AK a restricted RSASSA-SHA256 signing key, the EK the certificate's key; the credential. */
  #register(id: string, body: KeylimeRegisterBody): object {
    assert.deepEqual(Object.keys(body).sort(), ['aik_tpm', 'ek_tpm', 'ekcert', 'ip', 'mtls_cert', 'port'].filter((k) => k in body));
    for (const field of ['ekcert', 'ek_tpm', 'aik_tpm', 'mtls_cert'] as const) assert.equal(typeof body[field], 'string', field);
    const aik = parseTpm2bPublic(Buffer.from(body.aik_tpm, 'base64'));
    assert.equal(aik.type, 'rsa');
    assert.deepEqual(aik.scheme, { alg: TPM_ALG.RSASSA, hashAlg: TPM_ALG.SHA256 });
    const { ek } = checkEkMatchesCertificate(Buffer.from(body.ek_tpm, 'base64'), new X509Certificate(Buffer.from(body.ekcert, 'base64')));
    const secret = newCredentialSecret();
    const blob = encodeCredentialFile(makeCredential(this.substituteEk ?? ek, tpmName(aik), secret));
    this.agents.set(id, { key: Buffer.from(secret).toString('base64'), body, active: false });
    return this.omitBlob ? {} : { blob: Buffer.from(blob).toString('base64') };
  }

  /** Activation: `crypto.do_hmac(agent.key.encode(), agent_id)` must equal auth_tag; a wrong tag deletes the agent. */
  #activate(id: string, body: { auth_tag: string }): [number, object, string] {
    const agent = this.agents.get(id);
    if (agent === undefined) return [404, {}, 'no such agent'];
    const expected = createHmac('sha384', Buffer.from(agent.key, 'utf8')).update(id, 'utf8').digest('hex');
    if (body.auth_tag !== expected) {
      this.agents.delete(id);
      return [400, {}, `Auth tag ${body.auth_tag} does not match expected value`];
    }
    agent.active = true;
    return [200, {}, 'Success'];
  }
}

describe('Keylime registration', () => {
  let swtpm: SwtpmInstance;
  let other: SwtpmInstance;
  let tpm: Tpm;
  let registrar: FakeRegistrar;
  let work: string;

  before(async () => {
    [swtpm, other] = await Promise.all([startSwtpm({ ekCertificates: true }), startSwtpm({ ekCertificates: true })]);
    tpm = Tpm.open(swtpm.address);
    registrar = new FakeRegistrar();
    await registrar.start();
    work = mkdtempSync(join(tmpdir(), 'imakeep-keylime-reg-'));
  });

  after(async () => {
    await registrar?.close();
    await tpm?.close();
    await swtpm?.stop();
    await other?.stop();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  it('imakeep keylime registration prints the body: the RSA AK the Keylime routes quote with, the EK and its certificate', async () => {
    await tpm.close();
    const { stdout } = await run(process.execPath, [CLI, 'keylime', 'registration', '--tpm', swtpm.address, '--uuid', 'd432fbb3-d2f1-4a97-9ef7-75bd81c00000', '--ip', '192.0.2.7', '--port', '9002']);
    const body = JSON.parse(stdout) as KeylimeRegisterBody;
    assert.deepEqual(Object.keys(body), ['ekcert', 'ek_tpm', 'aik_tpm', 'mtls_cert', 'ip', 'port']);
    assert.equal(body.mtls_cert, 'disabled');
    assert.equal(body.ip, '192.0.2.7');
    assert.equal(body.port, 9002);
    const ak = await tpm.createAk({ alg: 'rsa' });
    await tpm.flush(ak.handle);
    assert.equal(body.aik_tpm, Buffer.from(ak.public).toString('base64'));
    checkEkMatchesCertificate(Buffer.from(body.ek_tpm, 'base64'), new X509Certificate(Buffer.from(body.ekcert, 'base64')));
  });

  it('register: POST, ActivateCredential of the blob, PUT auth_tag; the registrar activates the agent', async () => {
    const uuid = 'd432fbb3-d2f1-4a97-9ef7-75bd81c00001';
    const { registration, authTag } = await registerWithKeylime(tpm, { registrar: registrar.url, uuid, apiVersion: '2.1' });
    const agent = registrar.agents.get(uuid);
    assert.equal(agent?.active, true);
    assert.equal(authTag, createHmac('sha384', Buffer.from(agent.key, 'utf8')).update(uuid).digest('hex'));
    assert.deepEqual(agent.body, registration.body);
    // The CLI, end to end, against the same registrar.
    await tpm.close();
    const { stdout } = await run(process.execPath, [CLI, 'keylime', 'register', '--registrar', registrar.url, '--tpm', swtpm.address, '--uuid', 'cli-agent-2']);
    assert.equal((JSON.parse(stdout) as { registered: string }).registered, 'cli-agent-2');
    assert.equal(registrar.agents.get('cli-agent-2')?.active, true);
  });

  it('a credential made for another TPM\'s EK cannot be activated; nothing is activated', async () => {
    const otherTpm = Tpm.open(other.address);
    try {
      registrar.substituteEk = parseTpm2bPublic(Buffer.from((await keylimeRegistration(otherTpm, { uuid: 'probe' })).body.ek_tpm, 'base64'));
    } finally {
      await otherTpm.close();
    }
    try {
      await assert.rejects(registerWithKeylime(tpm, { registrar: registrar.url, uuid: 'fooled' }), { code: 'ENROLL_ACTIVATION_FAILED' });
      assert.equal(registrar.agents.get('fooled')?.active, false);
    } finally {
      registrar.substituteEk = undefined;
    }
  });

  it('errors: bad uuid, registrar refusal or absence, no blob', async () => {
    await assert.rejects(keylimeRegistration(tpm, { uuid: 'a/b' }), { code: 'KEYLIME_BAD_UUID' });
    await assert.rejects(registerWithKeylime(tpm, { registrar: `${registrar.url}/nowhere`, uuid: 'x1' }), { code: 'KEYLIME_REGISTRAR_REFUSED' });
    await assert.rejects(registerWithKeylime(tpm, { registrar: 'http://127.0.0.1:1', uuid: 'x2' }), { code: 'KEYLIME_REGISTRAR_REFUSED' });
    registrar.omitBlob = true;
    try {
      await assert.rejects(registerWithKeylime(tpm, { registrar: registrar.url, uuid: 'x3' }), { code: 'KEYLIME_BAD_BLOB' });
    } finally {
      registrar.omitBlob = false;
    }
  });
});
