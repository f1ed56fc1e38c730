/**
 * The fleet's HTTP API, as a `node:http` request listener (`fleet.ts` binds it with the device
 * API's rules: plain HTTP on loopback only, TLS with client certificates elsewhere).
 *
 *   POST /v1/devices/{id}/evidence      bundles from the device's last acknowledged cursor:
 *                                       `application/cbor` one bundle, or
 *                                       `application/vnd.imakeep.bundles` a sequence of frames
 *                                       (u32 big-endian length, bundle); answers the acknowledgement
 *   POST /v1/devices/{id}/quote         JSON `{ attest, signature, pcrs }` over the last challenge
 *   POST /v1/devices/{id}/challenge     a new freshness nonce
 *   GET  /v1/devices[?after=&limit=]    `{ devices: [view] }`
 *   GET  /v1/devices/{id}               the device view
 *   GET  /v1/devices/{id}/ack           the newest acknowledgement
 *   GET  /v1/devices/{id}/log?boot=&from=&format=&bank=   the device's log in kernel formats
 *   GET  /v1/key                        the fleet's public key (PEM): what EAR tokens verify with
 *   GET  /metrics                       Prometheus text
 *   POST /v1/enroll                     an enrollment request (JSON, `src/enroll` format): the challenge
 *   POST /v1/enroll/{challenge}/answer  the device's proof: `{ deviceId, enrollment, token }`
 *   POST /v1/devices/{id}/approval      operator: `{ "enrollment": "approved" | "refused" | "pending" }`
 *
 * Who may call what (`FleetAuth`): the enrollment routes and the key are open (the exchange itself
 * authenticates the TPM); a device's routes (evidence, quote, challenge, ack) need the bearer token
 * it was given at enrollment (`Authorization: Bearer …`), or the operator's token; the other
 * routes are the operator's. On a loopback or unix-socket listener, the operator's routes and the
 * routes of devices enrolled without a token (by an operator, with their AK) are open; off
 * loopback (TLS only: `SERVE_INSECURE_BIND` otherwise) they need the operator's token.
 *
 * Bodies are read with bounded memory: one bundle at a time, each at most `maxBundleBytes`
 * (413 beyond), verified and committed before the next is read. Errors are
 * `{ "error": { "code", "message", "details" } }` with the code's status.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isImakeepError } from '../errors.js';
import { formatPrometheus, openLogQuery, PROMETHEUS_CONTENT_TYPE, Query, ServeError, type MetricSample } from '../serve/index.js';
import { decodeEnrollAnswer, decodeEnrollRequest, encodeEnrollChallenge, type EnrollErrorCode } from '../enroll/index.js';
import { EnrollError } from '../enroll/index.js';
import { StoreError } from '../store/index.js';
import { DEVICE_ID_PATTERN, tokenMatches } from './enrollment.js';
import { FleetError } from './errors.js';
import { deviceLogStore } from './device-log.js';
import type { Enrollment } from './repository.js';
import type { FleetService, FreshQuoteAnswer } from './service.js';

/** Limits of the fleet API. */
export interface FleetHttpLimits {
  /** Largest bundle accepted (one frame). Default 8 MiB: eight times the device's default bundle. */
  readonly maxBundleBytes: number;
  /** Longest request target. Default 2048. */
  readonly maxUrlLength: number;
}

export const DEFAULT_FLEET_HTTP_LIMITS: FleetHttpLimits = { maxBundleBytes: 8 * 1024 * 1024, maxUrlLength: 2048 };

/** Content type of a body of length-prefixed bundle frames. */
export const BUNDLE_FRAMES_TYPE = 'application/vnd.imakeep.bundles';

/** Largest JSON body (a quote answer is ~1 KiB). */
const MAX_JSON_BYTES = 64 * 1024;

/** Who may call a route: anyone, the device it names (or the operator), the operator. */
type Access = 'open' | 'device' | 'operator';

const DEVICE_SUBROUTES = ['evidence', 'quote', 'challenge', 'ack', 'log', 'approval'] as const;

type Route =
  | { readonly name: (typeof DEVICE_SUBROUTES)[number] | 'device'; readonly id: string }
  | { readonly name: 'enroll-answer'; readonly id: string }
  | { readonly name: 'devices' | 'key' | 'metrics' | 'enroll' };

/** Method and access of each route. */
const ROUTES: Readonly<Record<Route['name'], { readonly method: 'GET' | 'POST'; readonly access: Access; readonly parameters: readonly string[] }>> = {
  evidence: { method: 'POST', access: 'device', parameters: [] },
  quote: { method: 'POST', access: 'device', parameters: [] },
  challenge: { method: 'POST', access: 'device', parameters: [] },
  ack: { method: 'GET', access: 'device', parameters: [] },
  device: { method: 'GET', access: 'operator', parameters: [] },
  log: { method: 'GET', access: 'operator', parameters: ['boot', 'from', 'format', 'bank'] },
  approval: { method: 'POST', access: 'operator', parameters: [] },
  devices: { method: 'GET', access: 'operator', parameters: ['after', 'limit'] },
  metrics: { method: 'GET', access: 'operator', parameters: [] },
  key: { method: 'GET', access: 'open', parameters: [] },
  enroll: { method: 'POST', access: 'open', parameters: [] },
  'enroll-answer': { method: 'POST', access: 'open', parameters: [] },
};

/** A path segment, percent-decoded; a malformed escape is the client's mistake. */
function segment(raw: string, pattern: RegExp, what: string): string {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    value = '';
  }
  if (!pattern.test(value)) throw new ServeError('SERVE_BAD_PARAMETER', what, { parameter: 'id' });
  return value;
}

function routeOf(pathname: string): Route | undefined {
  if (pathname === '/v1/devices') return { name: 'devices' };
  if (pathname === '/v1/key') return { name: 'key' };
  if (pathname === '/metrics') return { name: 'metrics' };
  if (pathname === '/v1/enroll') return { name: 'enroll' };
  const answer = /^\/v1\/enroll\/([^/]+)\/answer$/.exec(pathname);
  if (answer !== null) return { name: 'enroll-answer', id: segment(answer[1] ?? '', /^[0-9a-f]{32}$/, 'a challenge id is 32 lowercase hex digits') };
  const m = /^\/v1\/devices\/([^/]+)(?:\/([a-z]+))?$/.exec(pathname);
  if (m === null) return undefined;
  const sub = m[2];
  const name = sub === undefined ? 'device' : DEVICE_SUBROUTES.find((r) => r === sub);
  if (name === undefined) return undefined;
  return { name, id: segment(m[1] ?? '', DEVICE_ID_PATTERN, 'a device id is 1..128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit') };
}

/** The whole body, refused past `limit` bytes with `tooLarge`. */
async function readAll(req: IncomingMessage, limit: number, tooLarge: (limit: number) => FleetError): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req as AsyncIterable<Buffer>) {
    size += part.length;
    if (size > limit) throw tooLarge(limit);
    parts.push(part);
  }
  return Buffer.concat(parts);
}

function bundleTooLarge(limit: number): FleetError {
  return new FleetError('FLEET_BUNDLE_TOO_LARGE', `a bundle of more than ${limit} bytes`, { check: 'body-size' });
}

function bodyTooLarge(limit: number): FleetError {
  return new FleetError('FLEET_BODY_TOO_LARGE', `a JSON body of more than ${limit} bytes`, { check: 'body-size' });
}

/** A JSON body of at most {@link MAX_JSON_BYTES}, as text. */
async function jsonText(req: IncomingMessage): Promise<string> {
  return Buffer.from(await readAll(req, MAX_JSON_BYTES, bodyTooLarge)).toString('utf8');
}

/** HTTP status of the enrollment codes a client can cause (the device-side ones are the fleet's fault). */
const ENROLL_STATUS: Partial<Record<EnrollErrorCode, number>> = {
  ENROLL_BAD_FILE: 400,
  ENROLL_EK_CERT_CHAIN: 403,
  ENROLL_EK_MISMATCH: 403,
  ENROLL_AK_ATTRIBUTES: 422,
  ENROLL_ACTIVATION_FAILED: 403,
  ENROLL_UNKNOWN_CHALLENGE: 404,
  ENROLL_CHALLENGE_EXPIRED: 410,
};

/** Who the fleet trusts without a token (see the module comment). */
export interface FleetAuth {
  /** True on a loopback or unix-socket listener: the operator's routes are open. */
  readonly trustedNetwork: boolean;
  /** The operator's bearer token; required off loopback for the operator's routes. */
  readonly operatorToken?: string;
}

function bearerOf(req: IncomingMessage): string | undefined {
  const m = /^Bearer ([A-Za-z0-9._~+/=-]{1,512})$/.exec(req.headers.authorization ?? '');
  return m?.[1];
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function unauthorized(route: string, id: string | undefined): FleetError {
  return new FleetError('FLEET_UNAUTHORIZED', `${route}${id === undefined ? '' : ` of device ${id}`} needs ${id === undefined ? "the operator's" : "the device's (or the operator's)"} bearer token`, {
    ...(id === undefined ? {} : { deviceId: id }),
    check: 'bearer-token',
  });
}

/**
 * The bundles of a frames body, one at a time: memory is one frame (at most `limit`) whatever the
 * body's length. A body cut inside a frame is `FLEET_BUNDLE_CORRUPT` after the frames before it.
 */
export async function* bundleFrames(body: AsyncIterable<Uint8Array>, limit: number): AsyncGenerator<Uint8Array> {
  let pending = Buffer.alloc(0);
  let want: number | undefined;
  for await (const part of body) {
    pending = pending.length === 0 ? Buffer.from(part) : Buffer.concat([pending, part]);
    for (;;) {
      if (want === undefined) {
        if (pending.length < 4) break;
        want = pending.readUInt32BE(0);
        if (want === 0) throw new FleetError('FLEET_BUNDLE_CORRUPT', 'a frame of length 0', { check: 'frame' });
        if (want > limit) throw bundleTooLarge(limit);
        pending = pending.subarray(4);
      }
      if (pending.length < want) break;
      const frame = Uint8Array.from(pending.subarray(0, want));
      pending = pending.subarray(want);
      want = undefined;
      yield frame;
    }
  }
  if (want !== undefined || pending.length > 0) throw new FleetError('FLEET_BUNDLE_CORRUPT', 'the body ends inside a frame', { check: 'frame' });
}

/** Frames of `bundles` as one body (what the device's sync sends). */
export function frameBundle(bundle: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + bundle.length);
  new DataView(out.buffer).setUint32(0, bundle.length);
  out.set(bundle, 4);
  return out;
}

/** `{ "enrollment": "approved" | "refused" | "pending" }`, else `SERVE_BAD_PARAMETER`. */
function parseApproval(body: string): Enrollment {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    value = undefined;
  }
  const enrollment = typeof value === 'object' && value !== null && 'enrollment' in value ? ENROLLMENTS.find((e) => e === value.enrollment) : undefined;
  if (enrollment === undefined) throw new ServeError('SERVE_BAD_PARAMETER', `the body must be JSON { "enrollment": ${ENROLLMENTS.map((e) => `"${e}"`).join(' | ')} }`, { parameter: 'enrollment' });
  return enrollment;
}

const ENROLLMENTS: readonly Enrollment[] = ['approved', 'refused', 'pending'];

function parseAnswer(body: string): FreshQuoteAnswer {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    value = undefined;
  }
  const ok =
    typeof value === 'object' &&
    value !== null &&
    'attest' in value &&
    typeof value.attest === 'string' &&
    'signature' in value &&
    typeof value.signature === 'string' &&
    'pcrs' in value &&
    Array.isArray(value.pcrs) &&
    value.pcrs.every(
      (p: unknown) => typeof p === 'object' && p !== null && 'bank' in p && typeof p.bank === 'string' && 'pcr' in p && Number.isInteger(p.pcr) && 'value' in p && typeof p.value === 'string',
    );
  if (!ok) throw new FleetError('FLEET_STALE_QUOTE', 'the body is not JSON { attest, signature, pcrs: [{ bank, pcr, value }] }', { check: 'quote-body' });
  return value as FreshQuoteAnswer;
}

/** The fleet's request listener and its counters. */
export class FleetHandler {
  readonly #service: FleetService;
  readonly #limits: FleetHttpLimits;
  readonly #auth: FleetAuth;
  readonly #requests = new Map<string, number>();
  #bundles = 0;
  #records = 0;

  constructor(service: FleetService, limits: Partial<FleetHttpLimits> = {}, auth: FleetAuth = { trustedNetwork: true }) {
    this.#service = service;
    this.#limits = { ...DEFAULT_FLEET_HTTP_LIMITS, ...limits };
    this.#auth = auth;
  }

  readonly listener = (req: IncomingMessage, res: ServerResponse): void => {
    void this.#handle(req, res);
  };

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let name = 'none';
    try {
      const target = req.url ?? '/';
      if (target.length > this.#limits.maxUrlLength) throw new ServeError('SERVE_URI_TOO_LONG', `request target longer than ${this.#limits.maxUrlLength} bytes`);
      const url = URL.canParse(target, 'http://fleet.invalid') ? new URL(target, 'http://fleet.invalid') : undefined;
      if (url === undefined) throw new ServeError('SERVE_BAD_REQUEST', 'the request target is not a URL path');
      // A path the URL parser rewrites (dot segments, also as %2e) names another resource than it
      // spells: refused, so that what is routed and authorised is what the client sent.
      if (url.pathname !== (target.split('?')[0] ?? '')) throw new ServeError('SERVE_BAD_PARAMETER', 'the path must be plain: no dot segments, no absolute URL', { parameter: 'path' });
      const route = routeOf(url.pathname);
      if (route === undefined) throw new ServeError('SERVE_NOT_FOUND', `no resource ${url.pathname.slice(0, 64)}`);
      name = route.name;
      const { method, parameters } = ROUTES[route.name];
      if (req.method !== method) {
        res.setHeader('Allow', method);
        throw new ServeError('SERVE_METHOD_NOT_ALLOWED', `${String(req.method).slice(0, 16)} is not allowed; use ${method}`);
      }
      const query = new Query(url.searchParams, parameters);
      await this.#authorize(route, req);
      await this.#route(route, query, req, res);
      this.#count(name, res.statusCode);
    } catch (e) {
      this.#fail(req, res, name, e);
    }
  }

  /** Throws `FLEET_UNAUTHORIZED` unless the request may use `route` (module comment). */
  async #authorize(route: Route, req: IncomingMessage): Promise<void> {
    const { access } = ROUTES[route.name];
    if (access === 'open') return;
    const bearer = bearerOf(req);
    const operator = this.#auth.operatorToken;
    if (bearer !== undefined && operator !== undefined && sameSecret(bearer, operator)) return;
    if (access === 'device' && 'id' in route) {
      const device = await this.#service.repository.device(route.id);
      if (device !== undefined && device.tokenHash !== null) {
        if (tokenMatches(device, bearer)) return;
        throw unauthorized(route.name, route.id);
      }
    }
    if (!this.#auth.trustedNetwork) throw unauthorized(route.name, access === 'device' && 'id' in route ? route.id : undefined);
  }

  async #route(route: Route, query: Query, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const service = this.#service;
    switch (route.name) {
      case 'evidence': {
        const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim();
        const limit = this.#limits.maxBundleBytes;
        let bundles: AsyncIterable<Uint8Array>;
        if (type === BUNDLE_FRAMES_TYPE) bundles = bundleFrames(req, limit);
        else if (type === 'application/cbor') bundles = (async function* () { yield await readAll(req, limit, bundleTooLarge); })();
        else throw new ServeError('SERVE_BAD_PARAMETER', `Content-Type must be application/cbor or ${BUNDLE_FRAMES_TYPE}`, { parameter: 'content-type' });
        const ack = await service.push(route.id, bundles);
        this.#bundles += ack.bundles;
        this.#records += ack.records;
        return this.#json(res, 200, ack);
      }
      case 'quote': {
        const answer = parseAnswer(await jsonText(req));
        const at = await service.answer(route.id, answer);
        return this.#json(res, 200, { freshAt: at.toISOString() });
      }
      case 'challenge':
        return this.#json(res, 200, { nonce: await service.challenge(route.id) });
      case 'device':
        return this.#json(res, 200, await service.view(route.id));
      case 'ack': {
        const ack = await service.repository.lastAck(route.id);
        if (ack === undefined) {
          await service.view(route.id); // unknown device → 404 with its code
          throw new FleetError('FLEET_UNKNOWN_DEVICE', `device ${route.id} has no acknowledgement yet`, { deviceId: route.id, check: 'ack' });
        }
        return this.#json(res, 200, { seq: ack.seq, cursor: ack.cursor, token: ack.token, at: ack.at.toISOString() });
      }
      case 'log':
        return this.#log(route.id, query, res);
      case 'devices': {
        const limit = query.index('limit') ?? 100;
        if (limit < 1 || limit > 1000) throw new ServeError('SERVE_BAD_PARAMETER', 'limit must be in 1..1000', { parameter: 'limit' });
        const rows = await service.repository.devices(query.text('after'), limit);
        return this.#json(res, 200, { devices: rows.map((d) => service.viewOf(d)) });
      }
      case 'enroll': {
        const challenge = await service.enrollments.request(decodeEnrollRequest(await jsonText(req)));
        res.writeHead(201, { 'Content-Type': 'application/json', Location: `/v1/enroll/${challenge.challengeId}/answer` });
        res.end(encodeEnrollChallenge(challenge));
        return;
      }
      case 'enroll-answer':
        return this.#json(res, 200, await service.enrollments.answer(route.id, decodeEnrollAnswer(await jsonText(req))));
      case 'approval': {
        const device = await service.enrollments.decide(route.id, parseApproval(await jsonText(req)));
        return this.#json(res, 200, service.viewOf(device));
      }
      case 'key':
        res.writeHead(200, { 'Content-Type': 'application/x-pem-file', 'Content-Length': Buffer.byteLength(service.publicKeyPem) });
        res.end(service.publicKeyPem);
        return;
      case 'metrics': {
        const body = formatPrometheus(await this.#metrics());
        res.writeHead(200, { 'Content-Type': PROMETHEUS_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
        return;
      }
    }
  }

  async #log(id: string, query: Query, res: ServerResponse): Promise<void> {
    await this.#service.view(id);
    const { body, headers } = await openLogQuery({ store: await deviceLogStore(this.#service.repository, id) }, query);
    res.writeHead(200, headers);
    try {
      await pipeline(Readable.from(body, { objectMode: false }), res);
    } catch {
      // The client went away or the database failed mid-stream: the response is cut short.
    } finally {
      await body.return();
    }
  }

  async #metrics(): Promise<MetricSample[]> {
    const totals = await this.#service.repository.totals();
    const samples: MetricSample[] = [];
    for (const [key, value] of this.#requests) {
      const [route = '', status = ''] = key.split(' ');
      samples.push({ name: 'imakeep_fleet_http_requests_total', help: 'HTTP requests answered by this process, by route and status.', type: 'counter', value, labels: { route, status } });
    }
    samples.push(
      { name: 'imakeep_fleet_bundles_accepted_total', help: 'Bundles this process verified and acknowledged.', type: 'counter', value: this.#bundles },
      { name: 'imakeep_fleet_records_accepted_total', help: 'Records this process verified and acknowledged.', type: 'counter', value: this.#records },
      { name: 'imakeep_fleet_devices', help: 'Devices the fleet knows.', type: 'gauge', value: totals.devices },
      { name: 'imakeep_fleet_records_verified', help: 'Records verified over all devices (all processes).', type: 'gauge', value: totals.records },
      { name: 'imakeep_fleet_chunks_stored', help: 'Chunks stored over all devices.', type: 'gauge', value: totals.chunks },
    );
    return samples;
  }

  #json(res: ServerResponse, status: number, value: unknown): void {
    const body = JSON.stringify(value);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  #fail(req: IncomingMessage, res: ServerResponse, route: string, e: unknown): void {
    const error =
      e instanceof StoreError && e.code === 'STORE_NOT_FOUND'
        ? new ServeError('SERVE_UNKNOWN_BOOT', e.message, {}, { cause: e })
        : !isImakeepError(e) && req.destroyed
          ? // The server's request timeout (or the client) ended the connection while the body was read.
            new ServeError('SERVE_REQUEST_TIMEOUT', 'the request ended before its body did', {}, { cause: e })
          : e;
    const status = error instanceof FleetError || error instanceof ServeError ? error.httpStatus : error instanceof EnrollError ? (ENROLL_STATUS[error.code] ?? 500) : 500;
    this.#count(route, status);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const code = isImakeepError(error) ? error.code : 'INTERNAL';
    const message = error instanceof Error ? error.message : String(error);
    const details = error instanceof FleetError || error instanceof ServeError || error instanceof EnrollError ? error.details : {};
    if (status === 401) res.setHeader('WWW-Authenticate', 'Bearer');
    // An unread request body would stall the connection: read no more of it, close after answering.
    if (!req.readableEnded) res.setHeader('Connection', 'close');
    this.#json(res, status, { error: { code, message, details } });
  }

  #count(route: string, status: number): void {
    const key = `${route} ${status}`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
  }
}
