/**
 * TLS material for the tests, made with openssl: a CA, a server certificate for `localhost` and a
 * client certificate it signs (a verifier's), as Keylime's CA makes them for its agents and
 * verifier (keylime `ca_util.py`); and an HTTPS client that presents a certificate or none.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';

/** PEM files of one CA and the certificates it signed. */
export interface TlsMaterial {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

/** A CA named `name` in `dir/name/`, with a server (CN localhost) and a client certificate. */
export function makeTlsMaterial(dir: string, name: string): TlsMaterial {
  const at = join(dir, name);
  mkdirSync(at, { recursive: true });
  const f = (file: string): string => join(at, file);
  const ssl = (...args: string[]): void => {
    const r = spawnSync('openssl', args, { cwd: at, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  };
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  ssl('req', '-x509', ...key, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-subj', `/CN=${name} CA`, '-days', '1');
  for (const who of ['server', 'client']) {
    ssl('req', ...key, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`), '-subj', `/CN=${who === 'server' ? 'localhost' : 'verifier'}`);
    ssl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${who}.pem`), '-days', '1');
  }
  return { ca: f('ca.pem'), serverCert: f('server.pem'), serverKey: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

/**
 * GET `path` over HTTPS from `port` on 127.0.0.1, trusting `ca` for the server, presenting
 * `client` (certificate and key files) or no certificate. Resolves with the status and body.
 */
export function httpsGet(port: number, path: string, ca: string, client?: { readonly cert: string; readonly key: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        ca: readFileSync(ca),
        servername: 'localhost',
        agent: false,
        ...(client === undefined ? {} : { cert: readFileSync(client.cert), key: readFileSync(client.key) }),
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}
