/**
 * Binding the API (design.md "Serving"): a unix socket by default, whose file mode decides who
 * reads the log (it names files: it is not public data); TCP only when asked, and then loopback
 * only unless TLS with client certificates is configured.
 *
 * Limits against hostile or slow clients, all bounded (measured defaults in test/serve):
 * headers at most `maxHeaderBytes` (431), the request target at most `maxUrlLength` (414), the
 * whole request within `requestTimeoutMs` (408), headers within `headersTimeoutMs` (slowloris),
 * and a socket with no progress for `idleTimeoutMs` is destroyed, which also ends a stream whose
 * client stopped reading (its backpressure had already paused the source); a stream read slower
 * than a minimum rate is cut (http.ts `RequestLimits`).
 *
 * Every client gets an HTTP answer, none a reset: at `maxConnections` open connections a new one
 * takes the place of the oldest connection that has no request in progress (a slow client still
 * sending headers gets 503 `SERVE_BUSY`, an idle keep-alive connection is closed); when every
 * connection has a request in progress, the new one gets 503 `SERVE_BUSY` with `Retry-After`.
 * Requests are then admitted per class (http.ts). CONNECT is answered 405 like any other method.
 */
import { readFileSync } from 'node:fs';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ServeError } from './errors.js';
import { ApiHandler, DEFAULT_REQUEST_LIMITS, type ApiOptions, type RequestLimits } from './http.js';

/** TLS with client certificates: every client must present a certificate signed by `ca`. */
export interface TlsFiles {
  /** PEM server certificate (chain). */
  readonly cert: string;
  /** PEM server private key. */
  readonly key: string;
  /** PEM CA certificate(s) that sign client certificates. */
  readonly ca: string;
}

/** Where to listen. */
export type ListenAddress =
  | { readonly socket: string; /** File mode of the socket; default 0o660. */ readonly mode?: number }
  | { readonly host: string; readonly port: number; readonly tls?: TlsFiles };

/**
 * TLS for a server whose clients authenticate inside HTTP (the fleet's bearer tokens): client
 * certificates are required only when `ca` is given.
 */
export interface ServerTlsFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca?: string;
}

/** Where {@link startHttpServer} binds: a {@link ListenAddress}, or TCP with {@link ServerTlsFiles}. */
export type BindAddress = ListenAddress | { readonly host: string; readonly port: number; readonly tls?: ServerTlsFiles };

/** Server-side limits (with the per-class request limits of http.ts). */
export interface ServerLimits extends RequestLimits {
  readonly maxHeaderBytes: number;
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** Open connections; past it, see the module comment. */
  readonly maxConnections: number;
}

/**
 * Defaults: 8 KiB of headers (a Keylime request is ~300 B); 10 s for headers and 30 s for a request
 * (GET requests have no body); 30 s without progress ends a connection; 64 connections, more than
 * both request classes together (a device has a handful of local readers and one or two
 * verifiers), so a connection with no request in progress can always be found to make room.
 */
export const DEFAULT_SERVER_LIMITS: ServerLimits = {
  ...DEFAULT_REQUEST_LIMITS,
  maxHeaderBytes: 8 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 30_000,
  maxConnections: 64,
};

/** A running API server. */
export interface ApiServer {
  /** `unix:PATH`, `http://HOST:PORT` or `https://HOST:PORT`. */
  readonly address: string;
  /** The request listener and its counters. */
  readonly handler: ApiHandler;
  /** Stops listening, ends open connections (streams in flight are cut), removes the socket file. */
  close(): Promise<void>;
}

/** True for an address only this machine can reach. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

/** Removes a socket file left by a server that is gone; refuses one a live server answers on. */
async function clearStaleSocket(path: string): Promise<void> {
  const stat = await lstat(path).catch(() => undefined);
  if (stat === undefined) return;
  if (!stat.isSocket()) throw new ServeError('SERVE_ADDRESS_IN_USE', `${path} exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new ServeError('SERVE_ADDRESS_IN_USE', `a server is listening on ${path}`);
  await unlink(path);
}

function readTls(tls: ServerTlsFiles): { cert: Buffer; key: Buffer; ca?: Buffer } {
  try {
    return { cert: readFileSync(tls.cert), key: readFileSync(tls.key), ...(tls.ca === undefined ? {} : { ca: readFileSync(tls.ca) }) };
  } catch (e) {
    throw new ServeError('SERVE_TLS_CONFIG', `cannot read TLS files: ${e instanceof Error ? e.message : String(e)}`, {}, { cause: e });
  }
}

function listen(server: Server, bind: (done: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      reject(e.code === 'EADDRINUSE' ? new ServeError('SERVE_ADDRESS_IN_USE', e.message, {}, { cause: e }) : e);
    };
    server.once('error', onError);
    bind(() => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * How long a connection answered and half-closed by the server may stay open for its client to
 * read the answer: a client still sending (slowloris) must not keep it longer, and destroying it
 * at once would make that client's next write fail (EPIPE), which discards the unread answer.
 */
const ANSWER_GRACE_MS = 1000;

/** An HTTP answer written on a raw socket, which is then half-closed and destroyed after a grace. */
function answerAndClose(socket: Duplex, status: number, reason: string, code: string, message: string, headers: readonly string[] = []): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code, message } });
  const head = [`HTTP/1.1 ${status} ${reason}`, 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`, ...headers, 'Connection: close'];
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
  const grace = setTimeout(() => socket.destroy(), ANSWER_GRACE_MS);
  socket.once('close', () => clearTimeout(grace));
}

/** llhttp error codes with their own status (node `http` docs, 'clientError'). */
const CLIENT_ERROR_STATUS: Readonly<Record<string, readonly [number, string, string]>> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'SERVE_HEADERS_TOO_LARGE'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'SERVE_REQUEST_TIMEOUT'],
};

/**
 * Answers a request the HTTP parser refused (garbage, oversized headers, a request too slow) with
 * the API's JSON error shape, then closes the connection; a socket already gone is just destroyed.
 */
function answerClientError(error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const [status, reason, code] = CLIENT_ERROR_STATUS[error.code ?? ''] ?? [400, 'Bad Request', 'SERVE_BAD_REQUEST'];
  answerAndClose(socket, status, reason, code, `${reason} (${error.code ?? 'parse error'})`);
}

/** What the server knows of one open connection. */
interface ConnectionState {
  /** Requests it sent so far. */
  requests: number;
  /** True while a request is in progress (from its headers to the end of its response). */
  busy: boolean;
}

/**
 * Keeps at most `max` connections open without resetting any (module comment): the oldest
 * connections that have no request in progress make room for new ones.
 */
class ConnectionGate {
  readonly #open = new Map<Socket, ConnectionState>();

  constructor(
    readonly max: number,
    readonly retryAfterSeconds: number,
  ) {}

  admit(socket: Socket): void {
    if (this.#open.size >= this.max) {
      // Map order is arrival order: the first idle one is the oldest.
      const idle = [...this.#open].find(([, state]) => !state.busy);
      if (idle === undefined) {
        this.#busy(socket);
        return;
      }
      const [victim, state] = idle;
      this.#open.delete(victim);
      if (state.requests === 0) this.#busy(victim);
      else victim.end(() => victim.destroy()); // idle keep-alive: a close is its normal end
    }
    this.#open.set(socket, { requests: 0, busy: false });
    socket.once('close', () => this.#open.delete(socket));
  }

  #busy(socket: Duplex): void {
    answerAndClose(socket, 503, 'Service Unavailable', 'SERVE_BUSY', `${this.max} connections are open; retry after ${this.retryAfterSeconds} s`, [`Retry-After: ${this.retryAfterSeconds}`]);
  }

  /** A request began on `socket`; it ends when its response closes. */
  started(socket: Socket, res: { once(event: 'close', f: () => void): unknown }): void {
    const state = this.#open.get(socket);
    if (state === undefined) return;
    state.requests++;
    state.busy = true;
    res.once('close', () => {
      state.busy = false;
    });
  }
}

/** Starts the API on `address`. Throws `SERVE_INSECURE_BIND`, `SERVE_ADDRESS_IN_USE`, `SERVE_TLS_CONFIG`. */
export async function startApiServer(api: ApiOptions, address: ListenAddress, limits: Partial<ServerLimits> = {}): Promise<ApiServer> {
  const handler = new ApiHandler(api, { ...DEFAULT_SERVER_LIMITS, ...limits });
  const bound = await startHttpServer(handler.listener, address, limits);
  return { address: bound.address, handler, close: bound.close };
}

/** A bound HTTP server: its shown address and how to stop it. */
export interface BoundServer {
  /** `unix:PATH`, `http://HOST:PORT` or `https://HOST:PORT`. */
  readonly address: string;
  /** Stops listening, ends open connections, removes the socket file. */
  close(): Promise<void>;
}

/**
 * Binds `listener` on `address` with this module's rules and limits (the device API and the fleet
 * service share them). Throws `SERVE_INSECURE_BIND`, `SERVE_ADDRESS_IN_USE`, `SERVE_TLS_CONFIG`.
 */
export async function startHttpServer(listener: RequestListener, address: BindAddress, limits: Partial<ServerLimits> = {}): Promise<BoundServer> {
  const l = { ...DEFAULT_SERVER_LIMITS, ...limits };
  const gate = new ConnectionGate(l.maxConnections, l.retryAfterSeconds);
  const options = {
    maxHeaderSize: l.maxHeaderBytes,
    headersTimeout: l.headersTimeoutMs,
    requestTimeout: l.requestTimeoutMs,
    // How often Node checks the two timeouts above (default 30 s would let a slowloris client
    // hold a connection 3x longer than headersTimeout).
    connectionsCheckingInterval: Math.min(1000, l.headersTimeoutMs),
    keepAliveTimeout: 5_000,
  };
  let server: Server;
  let shown: string;
  if ('socket' in address) {
    server = createHttpServer(options, listener);
    shown = `unix:${address.socket}`;
  } else if (address.tls !== undefined) {
    const client = address.tls.ca !== undefined;
    server = createHttpsServer({ ...options, ...readTls(address.tls), requestCert: client, rejectUnauthorized: client }, listener);
    shown = `https://${address.host}:${address.port}`;
  } else {
    if (!isLoopback(address.host)) {
      throw new ServeError('SERVE_INSECURE_BIND', `refusing plain HTTP on ${address.host}: bind a loopback address or configure TLS with client certificates`);
    }
    server = createHttpServer(options, listener);
    shown = `http://${address.host}:${address.port}`;
  }
  server.on('clientError', answerClientError);
  // TLS: admitted once the handshake is done (a plaintext 503 means nothing to a TLS client).
  server.on('tls' in address && address.tls !== undefined ? 'secureConnection' : 'connection', (socket: Socket) => gate.admit(socket));
  server.on('request', (req: IncomingMessage, res: ServerResponse) => gate.started(req.socket, res));
  // Node closes a CONNECT request's socket unanswered when nobody listens for 'connect'.
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    answerAndClose(socket, 405, 'Method Not Allowed', 'SERVE_METHOD_NOT_ALLOWED', `${String(req.method).slice(0, 16)} is not allowed; use GET`, ['Allow: GET']);
  });
  server.timeout = l.idleTimeoutMs;
  if ('socket' in address) {
    const path = address.socket;
    await clearStaleSocket(path);
    // The socket must never exist with wider permissions than asked, not even between listen and chmod.
    const mode = address.mode ?? 0o660;
    const previous = process.umask(0o777 & ~mode);
    try {
      await listen(server, (done) => server.listen(path, done));
    } finally {
      process.umask(previous);
    }
    await chmod(path, mode);
  } else {
    const { host, port } = address;
    await listen(server, (done) => server.listen(port, host, done));
    const bound = server.address();
    if (typeof bound === 'object' && bound !== null) shown = shown.replace(/:\d+$/, `:${bound.port}`);
  }
  let closed: Promise<void> | undefined;
  return {
    address: shown,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }).then(async () => {
        if ('socket' in address) await unlink(address.socket).catch(() => undefined);
      });
      return closed;
    },
  };
}
