/** A small HTTP client for the tests: one request, the whole body, over a unix socket or TCP. */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';

/** Where the server listens. */
export type Target = { readonly socket: string } | { readonly host: string; readonly port: number };

/** A response read whole. */
export interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** GET `path` and read the whole body. */
export function get(target: Target, path: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const where = 'socket' in target ? { socketPath: target.socket } : { host: target.host, port: target.port };
    const req = httpRequest({ ...where, path, method, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The JSON body of a reply. */
export function json(reply: Reply): unknown {
  return JSON.parse(reply.body.toString('utf8'));
}

/** The `error.code` of an error reply. */
export function errorCode(reply: Reply): string {
  const value = json(reply);
  if (typeof value === 'object' && value !== null && 'error' in value) {
    const error = value.error;
    if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') return error.code;
  }
  return `no error code in ${reply.body.toString('utf8').slice(0, 200)}`;
}

/**
 * GET `path` but read only the first `limit` body bytes, then drop the connection (a sync cut by a
 * network loss). Resolves with what arrived.
 */
export function getCut(target: Target, path: string, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const where = 'socket' in target ? { socketPath: target.socket } : { host: target.host, port: target.port };
    const req = httpRequest({ ...where, path, agent: false }, (res) => {
      const parts: Buffer[] = [];
      let got = 0;
      res.on('data', (c: Buffer) => {
        parts.push(c);
        got += c.length;
        if (got >= limit) {
          req.destroy();
          resolve(Buffer.concat(parts).subarray(0, limit));
        }
      });
      res.on('end', () => resolve(Buffer.concat(parts)));
      res.on('error', () => resolve(Buffer.concat(parts).subarray(0, limit)));
    });
    req.on('error', (e) => (req.destroyed ? undefined : reject(e)));
    req.end();
  });
}

/** Writes `data` on a raw connection to `target` and returns everything the server sends until it closes. */
export function raw(target: Target, data: string | Buffer, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = 'socket' in target ? connect(target.socket) : connect(target.port, target.host);
    const parts: Buffer[] = [];
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error('the server did not close the connection'));
    }, timeoutMs);
    c.on('data', (d: Buffer) => parts.push(d));
    c.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts).toString('latin1'));
    });
    c.on('error', () => undefined);
    c.write(data);
  });
}
