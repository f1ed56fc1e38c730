/**
 * The HTTP API (design.md "Serving"), as a `node:http` request listener; `server.ts` binds it.
 *
 *   GET /v1/log?boot=&from=&format=binary|ascii&bank=    the log in a kernel format, streamed
 *   GET /v1/quote?nonce=&mask=&ima_ml_entry=[&bank=]     a Keylime-shaped quote answer whose `pubkey` is the AK
 *   GET /v2.<M>/quotes/integrity?nonce=&mask=&partial=&ima_ml_entry=   Keylime mode: the agent's answer,
 *                                                        PCR 16 bound to the payload key and always quoted
 *   GET /v2.<M>/keys/pubkey, GET /version                Keylime mode: the agent's payload key, API version
 *   GET /v1/evidence?since=CURSOR[&max_bytes=]           a CBOR evidence bundle
 *   GET /v1/status                                       JSON
 *   GET /metrics                                         Prometheus text
 *
 * Every method but GET is 405 `SERVE_METHOD_NOT_ALLOWED`. Requests are admitted per class of
 * client (`RequestLimits`): long streams (log, evidence) and short requests (status, quotes,
 * metrics, the Keylime routes) each have their own share, so readers holding streams never starve
 * a status probe; a full class answers 503 `SERVE_BUSY` with `Retry-After`. A stream whose client
 * reads slower than a minimum rate while the server waits on it is cut.
 *
 * Errors: 4xx/5xx with `{ "error": { "code", "message" } }` (the Keylime routes add the agent's
 * `code`/`status`/`results` envelope). A failure after the first byte of a stream can only abort
 * the response: the first item of every stream is produced before the status line is written, so
 * what fails at the start (unknown boot, store errors) still gets its status.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BANKS, type BankName } from '../ima/index.js';
import { isImakeepError } from '../errors.js';
import { formatCursor, MAX_BOOT, StoreError, type ImaStore } from '../store/index.js';
import { ServeError } from './errors.js';
import { bootSummaries } from './boot-summary.js';
import { buildBundle, DEFAULT_BUNDLE_LIMITS, parseCursor, type BundleLimits } from './evidence.js';
import {
  KEYLIME_API_VERSION,
  KEYLIME_DATA_PCR,
  akPublicPem,
  keylimeBindingDigests,
  keylimeQuoteBody,
  keylimeQuoteFields,
  keylimeSuccess,
  parseKeylimeMask,
  parseKeylimeNonce,
  payloadPublicPem,
  type KeylimeOptions,
} from './keylime.js';
import { keylimeQuote } from './keylime-quote.js';
import { bootBanks, logCount, openLog, type LogFormat, type LogSource } from './log-stream.js';
import { formatPrometheus, PROMETHEUS_CONTENT_TYPE } from './metrics.js';
import type { PcrBinder, QuoteSource } from '../tpm/index.js';
import type { MetricSample, StatusSource } from './sources.js';

/** What the API serves from. */
export interface ApiOptions extends LogSource {
  /** The device's store (bundles and quotes need all of it). */
  readonly store: ImaStore;
  /** Collector status and metrics; without it, status shows the store only. */
  readonly status?: StatusSource;
  /** Quotes for `/v1/quote`; without it the route answers 503 `SERVE_UNAVAILABLE`. */
  readonly quotes?: QuoteSource;
  /** Largest bundle `/v1/evidence` builds; a client may ask for less with `max_bytes`. */
  readonly bundleLimits?: BundleLimits;
  /** Longest request target (path and query) accepted, in bytes; default 2048 (414 beyond). */
  readonly maxUrlLength?: number;
  /** Keylime mode: the agent's routes (`/v2.<M>/...`, `/version`) answer; 503 without it. */
  readonly keylime?: KeylimeOptions;
}

type RouteName = 'log' | 'quote' | 'evidence' | 'status' | 'metrics' | 'keylime-quote' | 'keylime-pubkey' | 'keylime-version';

/** Classes of request, each admitted up to its own limit. */
type RequestClass = 'stream' | 'short';

const ROUTE_CLASS: Readonly<Record<RouteName, RequestClass>> = {
  log: 'stream',
  evidence: 'stream',
  status: 'short',
  quote: 'short',
  metrics: 'short',
  'keylime-quote': 'short',
  'keylime-pubkey': 'short',
  'keylime-version': 'short',
};

/** How many requests of each class are answered at once, and how slow a stream's reader may be. */
export interface RequestLimits {
  /** Long streams at once (`/v1/log`, `/v1/evidence`). */
  readonly maxStreams: number;
  /** Short requests at once (`/v1/status`, `/v1/quote`, `/metrics`): a share streams cannot take. */
  readonly maxShortRequests: number;
  /** What `Retry-After` tells a client refused with `SERVE_BUSY`, in seconds. */
  readonly retryAfterSeconds: number;
  /**
   * A stream is cut when, over `slowReaderWindowMs`, its client took fewer than this many bytes
   * per second while the response was waiting on it (backpressure), not on its source.
   */
  readonly minReadBytesPerSecond: number;
  readonly slowReaderWindowMs: number;
}

/**
 * Defaults: a device has a handful of local readers and one or two verifiers; 16 streams at once
 * keep the memory of concurrent readers inside the daemon's band (each holds a store iterator and
 * up to 64 KiB of buffered response). 1 KiB/s over 10 s is far below any live client on a unix
 * socket or LAN and far above a client that stopped reading.
 */
export const DEFAULT_REQUEST_LIMITS: RequestLimits = {
  maxStreams: 16,
  maxShortRequests: 16,
  retryAfterSeconds: 1,
  minReadBytesPerSecond: 1024,
  slowReaderWindowMs: 10_000,
};

/** The agent's routes under an API version 2.x (the pull agent's versions; keylime `api_version.py`). */
const KEYLIME_PATHS: Readonly<Record<string, RouteName>> = { 'quotes/integrity': 'keylime-quote', 'keys/pubkey': 'keylime-pubkey' };
const KEYLIME_VERSIONED = /^\/v2\.\d{1,2}\/(.+)$/;

/** Query parameters each route accepts; anything else is a 400 (a typo must not silently mean a default). */
const PARAMETERS: Readonly<Record<RouteName, readonly string[]>> = {
  log: ['boot', 'from', 'format', 'bank'],
  quote: ['nonce', 'mask', 'ima_ml_entry', 'partial', 'bank'],
  'keylime-quote': ['nonce', 'mask', 'ima_ml_entry', 'partial', 'bank'],
  evidence: ['since', 'max_bytes'],
  status: [],
  metrics: [],
  'keylime-pubkey': [],
  'keylime-version': [],
};

/** Keylime mode as the handler holds it. */
interface KeylimeRoutes {
  readonly pubkey: string;
  readonly quotes: QuoteSource & PcrBinder;
}

const isKeylimeRoute = (route: RouteName | undefined): boolean => route === 'quote' || (route?.startsWith('keylime-') ?? false);

function routeOf(pathname: string): RouteName | undefined {
  switch (pathname) {
    case '/v1/log':
      return 'log';
    case '/v1/quote':
      return 'quote';
    case '/v1/evidence':
      return 'evidence';
    case '/v1/status':
      return 'status';
    case '/metrics':
      return 'metrics';
    case '/version':
      return 'keylime-version';
    default: {
      const rest = KEYLIME_VERSIONED.exec(pathname)?.[1];
      return rest !== undefined && Object.hasOwn(KEYLIME_PATHS, rest) ? KEYLIME_PATHS[rest] : undefined;
    }
  }
}

/** Typed access to a request's query parameters. */
export class Query {
  readonly #params: URLSearchParams;

  constructor(params: URLSearchParams, allowed: readonly string[]) {
    this.#params = params;
    for (const name of new Set(params.keys())) {
      if (!allowed.includes(name)) throw new ServeError('SERVE_BAD_PARAMETER', `unknown parameter '${name.slice(0, 32)}'`, { parameter: name.slice(0, 32) });
      if (params.getAll(name).length > 1) throw new ServeError('SERVE_BAD_PARAMETER', `parameter '${name}' given twice`, { parameter: name });
    }
  }

  text(name: string): string | null {
    return this.#params.get(name);
  }

  /** A non-negative safe integer in decimal, or undefined when absent. */
  index(name: string): number | undefined {
    const text = this.#params.get(name);
    if (text === null) return undefined;
    const value = /^\d{1,16}$/.test(text) ? Number(text) : NaN;
    if (!Number.isSafeInteger(value)) {
      throw new ServeError('SERVE_BAD_PARAMETER', `${name}='${text.slice(0, 32)}' is not an integer in 0..2^53-1`, { parameter: name });
    }
    return value;
  }

  oneOf<T extends string>(name: string, allowed: readonly T[]): T | undefined {
    const text = this.#params.get(name);
    if (text === null) return undefined;
    const match = allowed.find((a) => a === text);
    if (match === undefined) throw new ServeError('SERVE_BAD_PARAMETER', `${name} must be one of ${allowed.join(', ')}`, { parameter: name });
    return match;
  }
}

const FORMATS: readonly LogFormat[] = ['binary', 'ascii'];

/** Byte counts of a stream, told when it ends. */
async function* counted<T extends Uint8Array | string>(items: AsyncIterable<T>, onBytes: (n: number) => void): AsyncGenerator<Buffer> {
  for await (const item of items) {
    const buf = typeof item === 'string' ? Buffer.from(item, 'utf8') : Buffer.from(item.buffer, item.byteOffset, item.byteLength);
    onBytes(buf.length);
    yield buf;
  }
}

/** An async iterator whose `return` is always there (it closes what it reads from). */
export interface ClosableIterator<T> extends AsyncIterableIterator<T> {
  return(): Promise<IteratorResult<T>>;
}

/**
 * Produces the first item of `items` now (so a failure at the start becomes a status code) and
 * returns an iterator over all of them; its `return` reaches `items`, so a response abandoned at
 * any point closes the store iterator underneath.
 */
async function primed<T>(items: AsyncGenerator<T>): Promise<ClosableIterator<T>> {
  let first: IteratorResult<T> | undefined = await items.next();
  const iterator: ClosableIterator<T> = {
    next() {
      const head = first;
      first = undefined;
      return head === undefined ? items.next() : Promise.resolve(head);
    },
    return() {
      first = undefined;
      return items.return(undefined);
    },
    [Symbol.asyncIterator]: () => iterator,
  };
  return iterator;
}

/**
 * A log request opened from its query (`boot`, `from`, `format`, `bank`): the list's bytes with the
 * first item produced (so a failure at the start still gets its status) and the response headers.
 * The device API and the fleet (a device's stored log) serve logs through it.
 */
export async function openLogQuery(source: LogSource, query: Query): Promise<{ readonly body: ClosableIterator<Uint8Array>; readonly headers: Record<string, string> }> {
  const boot = query.index('boot');
  if (boot !== undefined && boot > MAX_BOOT) throw new ServeError('SERVE_BAD_PARAMETER', `boot must be at most ${MAX_BOOT}`, { parameter: 'boot' });
  const log = await openLog(source, {
    boot,
    from: query.index('from'),
    format: query.oneOf('format', FORMATS),
    bank: query.oneOf('bank', BANKS),
  });
  const body = await primed(log.bytes());
  return {
    body,
    headers: {
      'Content-Type': log.format === 'binary' ? 'application/octet-stream' : 'text/plain; charset=utf-8',
      'X-Imakeep-Boot': String(log.boot),
      'X-Imakeep-From': String(log.from),
      'X-Imakeep-Count': String(log.count),
    },
  };
}

/** Bytes buffered per response stream between the source and the socket. */
const STREAM_HIGH_WATER_MARK = 64 * 1024;

/** The API's request listener and its own counters. */
export class ApiHandler {
  readonly #options: ApiOptions;
  readonly #limits: RequestLimits;
  readonly #requests = new Map<string, number>();
  readonly #bytes = new Map<RouteName, number>();
  readonly #inFlight: Record<RequestClass, number> = { stream: 0, short: 0 };
  #activeStreams = 0;
  #abortedStreams = 0;
  #slowReadersCut = 0;
  /** Keylime mode: the payload key's PEM and what its routes quote with. */
  readonly #keylime: KeylimeRoutes | undefined;

  /** Throws `SERVE_BAD_PAYLOAD_KEY` for a Keylime payload key that is not RSA. */
  constructor(options: ApiOptions, limits: Partial<RequestLimits> = {}) {
    this.#options = options;
    this.#limits = { ...DEFAULT_REQUEST_LIMITS, ...limits };
    const { keylime } = options;
    this.#keylime = keylime === undefined ? undefined : { pubkey: payloadPublicPem(keylime.payloadKey), quotes: keylime.quotes };
  }

  /** The `request` listener to give `http.createServer`. */
  readonly listener = (req: IncomingMessage, res: ServerResponse): void => {
    void this.#handle(req, res);
  };

  /** Responses being streamed now. */
  get activeStreams(): number {
    return this.#activeStreams;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let route: RouteName | undefined;
    let admitted: RequestClass | undefined;
    try {
      if (req.method !== 'GET') {
        res.setHeader('Allow', 'GET');
        throw new ServeError('SERVE_METHOD_NOT_ALLOWED', `${String(req.method).slice(0, 16)} is not allowed; use GET`);
      }
      const target = req.url ?? '/';
      const maxUrl = this.#options.maxUrlLength ?? 2048;
      if (target.length > maxUrl) throw new ServeError('SERVE_URI_TOO_LONG', `request target longer than ${maxUrl} bytes`);
      const url = URL.canParse(target, 'http://imakeep.invalid') ? new URL(target, 'http://imakeep.invalid') : undefined;
      if (url === undefined) throw new ServeError('SERVE_BAD_REQUEST', 'the request target is not a URL path');
      route = routeOf(url.pathname);
      if (route === undefined) throw new ServeError('SERVE_NOT_FOUND', `no resource ${url.pathname.slice(0, 64)}`);
      const query = new Query(url.searchParams, PARAMETERS[route]);
      admitted = this.#admit(ROUTE_CLASS[route], res);
      await this.#route(route, query, res);
      this.#count(route, res.statusCode);
    } catch (e) {
      this.#fail(res, route, e);
    } finally {
      if (admitted !== undefined) this.#inFlight[admitted]--;
    }
  }

  /** Takes a place in the class's share, or throws `SERVE_BUSY` (with `Retry-After` set on `res`). */
  #admit(cls: RequestClass, res: ServerResponse): RequestClass {
    const limit = cls === 'stream' ? this.#limits.maxStreams : this.#limits.maxShortRequests;
    if (this.#inFlight[cls] >= limit) {
      res.setHeader('Retry-After', String(this.#limits.retryAfterSeconds));
      throw new ServeError('SERVE_BUSY', `${limit} ${cls === 'stream' ? 'streams' : 'short requests'} are being answered; retry after ${this.#limits.retryAfterSeconds} s`);
    }
    this.#inFlight[cls]++;
    return cls;
  }

  async #route(route: RouteName, query: Query, res: ServerResponse): Promise<void> {
    switch (route) {
      case 'log':
        return this.#log(query, res);
      case 'quote':
        return this.#quote(query, res, undefined);
      case 'keylime-quote':
        return this.#quote(query, res, this.#keylimeMode());
      case 'keylime-pubkey':
        return this.#json(res, 200, keylimeSuccess({ pubkey: this.#keylimeMode().pubkey }));
      case 'keylime-version':
        this.#keylimeMode();
        return this.#json(res, 200, keylimeSuccess({ supported_version: KEYLIME_API_VERSION }));
      case 'evidence':
        return this.#evidence(query, res);
      case 'status':
        return this.#json(res, 200, await this.#status());
      case 'metrics': {
        const body = formatPrometheus(await this.#metrics());
        res.writeHead(200, { 'Content-Type': PROMETHEUS_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
        return;
      }
    }
  }

  async #log(query: Query, res: ServerResponse): Promise<void> {
    const { body, headers } = await openLogQuery(this.#options, query);
    res.writeHead(200, headers);
    await this.#stream('log', body, res);
  }

  /** Keylime mode's key and quotes; 503 `SERVE_UNAVAILABLE` outside Keylime mode. */
  #keylimeMode(): KeylimeRoutes {
    if (this.#keylime === undefined) throw new ServeError('SERVE_UNAVAILABLE', 'Keylime mode is off: start the daemon with --keylime (a payload key)');
    return this.#keylime;
  }

  /**
   * A quote answer. With `keylime` (the Keylime routes) PCR 16 is reset and extended with
   * H(payload key PEM) in the quoted bank and added to the selection whatever the mask, and
   * `pubkey` is that PEM, as the agent does (rust-keylime `keylime/src/tpm.rs`, `build_pcr_list`);
   * otherwise (`/v1/quote`) `pubkey` is the AK. `partial=1` leaves `pubkey` out.
   */
  async #quote(query: Query, res: ServerResponse, keylime: KeylimeRoutes | undefined): Promise<void> {
    const nonce = parseKeylimeNonce(query.text('nonce'));
    const mask = parseKeylimeMask(query.text('mask'));
    const requestedEntry = query.index('ima_ml_entry') ?? 0;
    const requestedBank = query.oneOf('bank', BANKS);
    const partial = query.oneOf('partial', ['0', '1']) === '1';
    const quotes = keylime?.quotes ?? this.#options.quotes;
    if (quotes === undefined) throw new ServeError('SERVE_UNAVAILABLE', 'this server has no TPM to quote with');
    const { store } = this.#options;
    const boot = store.currentBoot;
    if (boot === undefined) throw new ServeError('SERVE_UNKNOWN_BOOT', 'the store has no boot yet');
    const bootRecord = await store.bootRecord(boot);
    const bank: BankName = requestedBank ?? (bootBanks(bootRecord).sha256 !== undefined ? 'sha256' : 'sha1');
    // Quote first, then read the log: the log then holds at least every record the quote covers;
    // the verifier replays until the quote matches (docs/ima-formats.md#pcr-replay; keylime `keylime/ima/ima.py`).
    const quote =
      keylime === undefined
        ? await keylimeQuote(this.#options, quotes, { nonce, bank, pcrs: mask, boot })
        : await keylimeQuote(this.#options, quotes, {
            nonce,
            bank,
            pcrs: [...new Set([...mask, KEYLIME_DATA_PCR])],
            boot,
            bind: { binder: keylime.quotes, pcr: KEYLIME_DATA_PCR, digests: keylimeBindingDigests(keylime.pubkey, [bank]) },
          });
    // Keylime agent semantics: an entry past the end returns the whole list from 0 (rust-keylime `keylime/src/ima/measurement_list.rs`).
    const entry = requestedEntry > (await logCount(this.#options, boot)) ? 0 : requestedEntry;
    const log = await openLog(this.#options, { boot, from: entry, format: 'ascii', bank: 'sha1' });
    const pubkey = partial ? undefined : (keylime?.pubkey ?? akPublicPem(quote));
    const fields = keylimeQuoteFields(quote, bank, pubkey, Math.floor(bootRecord.firstSeen / 1000));
    const body = await primed(keylimeQuoteBody(fields, log.bytes(), entry));
    res.writeHead(200, { 'Content-Type': 'application/json' });
    await this.#stream(keylime === undefined ? 'quote' : 'keylime-quote', body, res);
  }

  async #evidence(query: Query, res: ServerResponse): Promise<void> {
    const since = query.text('since');
    const limit = (this.#options.bundleLimits ?? DEFAULT_BUNDLE_LIMITS).maxBytes;
    const asked = query.index('max_bytes');
    if (asked === 0) throw new ServeError('SERVE_BAD_PARAMETER', 'max_bytes must be positive', { parameter: 'max_bytes' });
    const built = await buildBundle(this.#options.store, since === null ? undefined : parseCursor(since), {
      maxBytes: Math.min(limit, asked ?? limit),
    });
    res.writeHead(200, {
      'Content-Type': 'application/cbor',
      'Content-Length': built.bytes.length,
      'X-Imakeep-Cursor': formatCursor(built.bundle.cursor),
      'X-Imakeep-Next-Cursor': formatCursor(built.bundle.next),
      'X-Imakeep-Bundle-Full': built.full ? '1' : '0',
    });
    this.#addBytes('evidence', built.bytes.length);
    res.end(built.bytes);
  }

  async #status(): Promise<Record<string, unknown>> {
    const { store } = this.#options;
    const boots = await bootSummaries(store);
    const current = store.currentBoot;
    return {
      currentBoot: current ?? null,
      logCount: current === undefined ? 0 : await logCount(this.#options, current),
      boots,
      activeStreams: this.#activeStreams,
      collector: (await this.#options.status?.status()) ?? null,
    };
  }

  async #metrics(): Promise<MetricSample[]> {
    const samples: MetricSample[] = [];
    for (const [key, value] of this.#requests) {
      const [route = '', status = ''] = key.split(' ');
      samples.push({ name: 'imakeep_http_requests_total', help: 'HTTP requests answered, by route and status.', type: 'counter', value, labels: { route, status } });
    }
    for (const [route, value] of this.#bytes) {
      samples.push({ name: 'imakeep_http_sent_bytes_total', help: 'Body bytes sent, by route.', type: 'counter', value, labels: { route } });
    }
    samples.push(
      { name: 'imakeep_http_active_streams', help: 'Responses being streamed now.', type: 'gauge', value: this.#activeStreams },
      { name: 'imakeep_http_aborted_streams_total', help: 'Streams ended early (client gone, timeout, or source failure).', type: 'counter', value: this.#abortedStreams },
      { name: 'imakeep_http_slow_readers_cut_total', help: 'Streams cut because the client read slower than the minimum rate.', type: 'counter', value: this.#slowReadersCut },
    );
    const current = this.#options.store.currentBoot;
    if (current !== undefined) {
      samples.push({
        name: 'imakeep_store_records',
        help: 'Records of the current boot in committed chunks.',
        type: 'gauge',
        value: await this.#options.store.storedCount(current),
      });
    }
    samples.push(...((await this.#options.status?.metrics()) ?? []));
    return samples;
  }

  /**
   * Streams `body` into `res` with backpressure: a client that stops reading stops the source (the
   * socket's idle timeout then ends it). Never throws: a stream cut short is counted.
   */
  async #stream(route: RouteName, body: ClosableIterator<Uint8Array | string>, res: ServerResponse): Promise<void> {
    this.#activeStreams++;
    let sentInWindow = 0;
    const { minReadBytesPerSecond, slowReaderWindowMs } = this.#limits;
    // The socket's idle timeout ends a client that takes nothing; this ends one that takes a
    // trickle (a few bytes now and then reset the idle timer) while the response waits on it.
    const rate = setInterval(() => {
      if (res.writableNeedDrain && sentInWindow < (minReadBytesPerSecond * slowReaderWindowMs) / 1000) {
        this.#slowReadersCut++;
        res.destroy();
      }
      sentInWindow = 0;
    }, slowReaderWindowMs);
    try {
      const source = Readable.from(
        counted(body, (n) => {
          sentInWindow += n;
          this.#addBytes(route, n);
        }),
        { objectMode: false, highWaterMark: STREAM_HIGH_WATER_MARK },
      );
      await pipeline(source, res);
    } catch {
      this.#abortedStreams++;
    } finally {
      clearInterval(rate);
      this.#activeStreams--;
      await body.return(); // a no-op after a full read; otherwise closes the source
    }
  }

  #json(res: ServerResponse, status: number, value: unknown): void {
    const body = JSON.stringify(value);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  #fail(res: ServerResponse, route: RouteName | undefined, e: unknown): void {
    const error = asServeError(e);
    const status = error instanceof ServeError ? error.httpStatus : 500;
    this.#count(route ?? 'none', status);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const code = isImakeepError(error) ? error.code : 'INTERNAL';
    const message = error instanceof Error ? error.message : String(error);
    const body: Record<string, unknown> = { error: { code, message } };
    // Keylime verifiers read `code` and `status` of the agent's JsonWrapper.
    const value = isKeylimeRoute(route) ? { code: status, status: message, results: {}, ...body } : body;
    this.#json(res, status, value);
  }

  #count(route: string, status: number): void {
    const key = `${route} ${status}`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
  }

  #addBytes(route: RouteName, n: number): void {
    this.#bytes.set(route, (this.#bytes.get(route) ?? 0) + n);
  }
}

/** Store lookups of a missing boot are the client's `boot` being unknown. */
function asServeError(e: unknown): unknown {
  if (e instanceof StoreError && e.code === 'STORE_NOT_FOUND') {
    return new ServeError('SERVE_UNKNOWN_BOOT', e.message, e.details.boot === undefined ? {} : { boot: e.details.boot }, { cause: e });
  }
  return e;
}
