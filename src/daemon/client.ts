/**
 * The client side of a running daemon's API on its unix socket, for the CLI verbs that reach the
 * store through the daemon while it holds it (`imakeep log`, `status`, `export`).
 */
import { request, type IncomingMessage } from 'node:http';
import { ImakeepError } from '../errors.js';

/** An error answer of the daemon's API, restated with its code (`SERVE_RANGE`, ...). */
export class DaemonApiError extends ImakeepError {
  constructor(code: string, message: string, readonly status: number) {
    super(code, message);
  }
}

/**
 * GET `path` from the daemon's API on unix socket `socket`; resolves with the response once its
 * status is 200 (the body still to be read: it streams), rejects with {@link DaemonApiError} for
 * an error answer, or with the connection's error (ENOENT, ECONNREFUSED: no daemon).
 */
export function daemonGet(socket: string, path: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, method: 'GET' }, (res) => {
      if (res.statusCode === 200) return resolve(res);
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let code = 'DAEMON_HTTP_ERROR';
        let message = text.slice(0, 500);
        try {
          const body: unknown = JSON.parse(text);
          const error = typeof body === 'object' && body !== null && 'error' in body ? body.error : undefined;
          if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') code = error.code;
          if (typeof error === 'object' && error !== null && 'message' in error && typeof error.message === 'string') message = error.message;
        } catch {
          // not JSON: keep the text
        }
        reject(new DaemonApiError(code, `${path}: HTTP ${res.statusCode ?? '?'}: ${message}`, res.statusCode ?? 0));
      });
    });
    req.on('error', reject);
    req.end();
  });
}
