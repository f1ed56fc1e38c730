/**
 * HTTP GET over the collector's unix socket (design.md "Serving": unix socket by default), for the
 * demo and the benches: a JSON status, or a streamed body written to a file.
 */
import { createWriteStream } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { pipeline } from 'node:stream/promises';

/** A non-2xx answer, with the start of its body (the API's `{ error: { code, message } }`). */
export class HttpStatusError extends Error {
  readonly status: number;

  constructor(path: string, status: number, body: string) {
    super(`GET ${path}: HTTP ${status} ${body.slice(0, 300)}`);
    this.status = status;
  }
}

function get(socketPath: string, path: string, timeoutMs: number): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    // No keep-alive: an idle pooled connection would hold the daemon's server.close() on SIGTERM.
    const req = request({ socketPath, path, method: 'GET', timeout: timeoutMs, agent: false }, resolve);
    req.once('timeout', () => req.destroy(new Error(`GET ${path}: no answer within ${timeoutMs} ms`)));
    req.once('error', reject);
    req.end();
  });
}

async function bodyText(res: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of res) parts.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(parts).toString('utf8');
}

/** GET `path` and parse the JSON answer. */
export async function getJson(socketPath: string, path: string, timeoutMs = 10_000): Promise<unknown> {
  const res = await get(socketPath, path, timeoutMs);
  const text = await bodyText(res);
  if ((res.statusCode ?? 0) >= 300) throw new HttpStatusError(path, res.statusCode ?? 0, text);
  return JSON.parse(text);
}

/** GET `path` into `file`; resolves with the bytes written and the response headers. */
export async function getToFile(socketPath: string, path: string, file: string, timeoutMs = 60_000): Promise<{ readonly bytes: number; readonly headers: IncomingMessage['headers'] }> {
  const res = await get(socketPath, path, timeoutMs);
  if ((res.statusCode ?? 0) >= 300) throw new HttpStatusError(path, res.statusCode ?? 0, await bodyText(res));
  let bytes = 0;
  res.on('data', (d: Buffer) => {
    bytes += d.length;
  });
  await pipeline(res, createWriteStream(file));
  return { bytes, headers: res.headers };
}
