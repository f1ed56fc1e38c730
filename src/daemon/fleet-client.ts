/**
 * The device's side of the fleet's HTTP API (`src/fleet/http.ts`, reached only over HTTP: the
 * layers keep the daemon below the fleet): one request at a time over `node:http`/`node:https`
 * (HTTPS trusting the fleet's CA when given), with the device's bearer token; and self-enrollment
 * on first contact, the exchange of `src/enroll` (request → challenge → activation on this TPM →
 * answer → token), each step kept in a credentials file so that an answer the fleet did not
 * receive (it went down, the device went offline) is sent again at the next contact, days later.
 */
import { readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import {
  answerEnrollChallenge,
  createEnrollRequest,
  decodeEnrollAnswer,
  decodeEnrollChallenge,
  encodeEnrollAnswer,
  encodeEnrollChallenge,
  encodeEnrollRequest,
  type EnrollAnswer,
  type EnrollChallenge,
} from '../enroll/index.js';
import type { CreateAkOptions, Tpm } from '../tpm/index.js';
import { FleetSyncError } from './fleet-error.js';

/** Where the fleet is and how to trust it. */
export interface FleetEndpoint {
  /** `http://HOST:PORT` (loopback) or `https://HOST:PORT`. */
  readonly url: string;
  /** PEM of the CA the fleet's TLS certificate chains to (default: the system's CAs). */
  readonly ca?: string;
  /** Longest a request may take; default 120 s (a push of a full bundle verified on a busy fleet). */
  readonly timeoutMs?: number;
}

/** A reply read whole, JSON decoded (an object; `{}` for anything else). */
export interface FleetAnswer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/** A request to the fleet. */
export interface FleetRequest {
  readonly method: 'GET' | 'POST';
  readonly body?: Uint8Array | string;
  readonly type?: string;
  readonly token?: string;
  readonly signal?: AbortSignal;
}

/**
 * Statuses that say "not now" rather than "no": 408 Request Timeout (the server closed a request
 * it waited too long for, RFC 9110 §15.5.9: a node fleet answers it after `requestTimeout`, e.g. a
 * slow link's upload), 429 Too Many Requests (RFC 6585 §4) and every 5xx. The device backs off and
 * retries them; any other answer is the fleet's judgement of the request.
 */
const isTransientStatus = (status: number): boolean => status >= 500 || status === 408 || status === 429;

/**
 * One request; throws `SYNC_FLEET_UNAVAILABLE` when the fleet cannot be reached or answers a
 * transient status ({@link isTransientStatus}), returns every other answer.
 */
export function fleetCall(endpoint: FleetEndpoint, path: string, init: FleetRequest): Promise<FleetAnswer> {
  const url = new URL(path, endpoint.url);
  const https = url.protocol === 'https:';
  const headers: Record<string, string> = {
    ...(init.type === undefined ? {} : { 'content-type': init.type }),
    ...(init.token === undefined ? {} : { authorization: `Bearer ${init.token}` }),
    ...(init.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(init.body)) }),
  };
  const unavailable = (message: string, cause?: unknown, status?: number, fleetCode?: string): FleetSyncError =>
    new FleetSyncError('SYNC_FLEET_UNAVAILABLE', `fleet ${endpoint.url}: ${message}`, { ...(status === undefined ? {} : { status }), ...(fleetCode === undefined ? {} : { fleetCode }) }, cause === undefined ? undefined : { cause });
  return new Promise<FleetAnswer>((resolve, reject) => {
    const options = { method: init.method, headers, timeout: endpoint.timeoutMs ?? 120_000, agent: false as const, ...(init.signal === undefined ? {} : { signal: init.signal }) };
    const onResponse = (res: IncomingMessage): void => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', (e) => reject(unavailable(e.message, e)));
      res.on('end', () => {
        const body = jsonObject(Buffer.concat(parts).toString('utf8'));
        const status = res.statusCode ?? 0;
        if (isTransientStatus(status)) reject(unavailable(`answered ${status}`, undefined, status, errorField(body, 'code') ?? ''));
        else resolve({ status, body });
      });
    };
    const req = https ? httpsRequest(url, { ...options, ...(endpoint.ca === undefined ? {} : { ca: endpoint.ca }) }, onResponse) : httpRequest(url, options, onResponse);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${endpoint.timeoutMs ?? 120_000} ms`)));
    req.on('error', (e) => reject(unavailable(e.message, e)));
    req.end(init.body);
  });
}

function jsonObject(text: string): Record<string, unknown> {
  try {
    const parsed: unknown = text.length === 0 ? {} : JSON.parse(text);
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** `error.code` or `error.message` of a fleet error body. */
export function errorField(body: Record<string, unknown>, name: 'code' | 'message'): string | undefined {
  const error = body.error;
  if (typeof error !== 'object' || error === null || !(name in error)) return undefined;
  const value: unknown = (error as Record<string, unknown>)[name];
  return typeof value === 'string' ? value : undefined;
}

/** Where the device's enrollment with the fleet stands. */
export type DeviceEnrollmentState = 'none' | 'challenged' | 'answered' | 'approved' | 'pending';

/** The credentials file: the fleet's token, or the exchange in progress. */
interface Credentials {
  readonly fleet: string;
  readonly deviceId: string;
  readonly token?: string;
  readonly enrollment?: 'approved' | 'pending';
  readonly challenge?: EnrollChallenge;
  readonly answer?: EnrollAnswer;
}

const CREDENTIALS_FORMAT = 'imakeep-fleet-credentials';

/** Options of {@link FleetEnroller}. */
export interface FleetEnrollerOptions {
  readonly endpoint: FleetEndpoint;
  readonly deviceId: string;
  /** The kernel boot id the request names (/proc/sys/kernel/random/boot_id). */
  readonly kernelBootId: () => string;
  /** Runs a task on the TPM between the daemon's quotes (`TpmQuoter.use`). */
  readonly useTpm: <T>(task: (tpm: Tpm) => Promise<T>) => Promise<T>;
  /** The AK the daemon quotes with (the one enrolled). */
  readonly ak?: CreateAkOptions;
  /** The credentials file (mode 0600; it holds the bearer token). */
  readonly file: string;
}

/** The device's self-enrollment with the fleet, resumable across restarts and days offline. */
export class FleetEnroller {
  readonly #o: FleetEnrollerOptions;
  #credentials: Credentials | undefined;

  constructor(options: FleetEnrollerOptions) {
    this.#o = options;
    this.#credentials = this.#load();
  }

  /** Where the enrollment stands. */
  get state(): DeviceEnrollmentState {
    const c = this.#credentials;
    if (c?.token !== undefined) return c.enrollment ?? 'approved';
    if (c?.answer !== undefined) return 'answered';
    return c?.challenge !== undefined ? 'challenged' : 'none';
  }

  /**
   * The device's bearer token, enrolling first if it has none: sends a kept answer again, or
   * requests a challenge and answers it with the TPM. Throws `SYNC_FLEET_UNAVAILABLE` (the step
   * reached so far is kept) or `SYNC_ENROLL_REFUSED`.
   */
  async token(signal?: AbortSignal): Promise<string> {
    const kept = this.#credentials;
    if (kept?.token !== undefined) return kept.token;
    if (kept?.challenge !== undefined && kept.answer !== undefined) {
      const token = await this.#deliver(kept.challenge, kept.answer, signal);
      if (token !== undefined) return token;
    }
    const o = this.#o;
    const request = await o.useTpm((tpm) => createEnrollRequest(tpm, { deviceId: o.deviceId, kernelBootId: o.kernelBootId(), ...(o.ak === undefined ? {} : { ak: o.ak }) }));
    const asked = await fleetCall(o.endpoint, '/v1/enroll', { method: 'POST', type: 'application/json', body: encodeEnrollRequest(request), ...(signal === undefined ? {} : { signal }) });
    if (asked.status !== 201) throw refusedBy(asked);
    const challenge = decodeEnrollChallenge(JSON.stringify(asked.body));
    await this.#save({ fleet: o.endpoint.url, deviceId: o.deviceId, challenge });
    const answer = await o.useTpm((tpm) => answerEnrollChallenge(tpm, challenge));
    await this.#save({ fleet: o.endpoint.url, deviceId: o.deviceId, challenge, answer });
    const token = await this.#deliver(challenge, answer, signal);
    if (token === undefined) throw refusedBy({ status: 404, body: { error: { code: 'ENROLL_UNKNOWN_CHALLENGE', message: 'the fleet lost the challenge it just made' } } });
    return token;
  }

  /** Forgets the token (the fleet no longer takes it): the next {@link token} enrolls again. */
  async forget(): Promise<void> {
    await this.#save({ fleet: this.#o.endpoint.url, deviceId: this.#o.deviceId });
  }

  /** Sends the answer; the token, or undefined when the fleet no longer holds the challenge (ask again). */
  async #deliver(challenge: EnrollChallenge, answer: EnrollAnswer, signal: AbortSignal | undefined): Promise<string | undefined> {
    const o = this.#o;
    const reply = await fleetCall(o.endpoint, `/v1/enroll/${challenge.challengeId}/answer`, {
      method: 'POST',
      type: 'application/json',
      body: encodeEnrollAnswer(answer),
      ...(signal === undefined ? {} : { signal }),
    });
    const code = errorField(reply.body, 'code');
    if (code === 'ENROLL_UNKNOWN_CHALLENGE' || code === 'ENROLL_CHALLENGE_EXPIRED') return undefined;
    if (reply.status !== 200 || typeof reply.body.token !== 'string') throw refusedBy(reply);
    const enrollment = reply.body.enrollment === 'pending' ? 'pending' : 'approved';
    await this.#save({ fleet: o.endpoint.url, deviceId: o.deviceId, token: reply.body.token, enrollment });
    return reply.body.token;
  }

  /** The kept credentials for this fleet and device id, or none (missing, unreadable, another fleet's: enroll afresh). */
  #load(): Credentials | undefined {
    let text: string;
    try {
      text = readFileSync(this.#o.file, 'utf8');
    } catch {
      return undefined;
    }
    try {
      const v = JSON.parse(text) as Record<string, unknown>;
      if (v.format !== CREDENTIALS_FORMAT || v.version !== 1 || v.fleet !== this.#o.endpoint.url || v.deviceId !== this.#o.deviceId) return undefined;
      return {
        fleet: this.#o.endpoint.url,
        deviceId: this.#o.deviceId,
        ...(typeof v.token === 'string' ? { token: v.token, enrollment: v.enrollment === 'pending' ? 'pending' : 'approved' } : {}),
        ...(typeof v.challenge === 'string' ? { challenge: decodeEnrollChallenge(v.challenge) } : {}),
        ...(typeof v.answer === 'string' ? { answer: decodeEnrollAnswer(v.answer) } : {}),
      };
    } catch {
      return undefined;
    }
  }

  /** Writes the credentials whole (temp file, rename), mode 0600. */
  async #save(c: Credentials): Promise<void> {
    this.#credentials = c;
    const value = {
      format: CREDENTIALS_FORMAT,
      version: 1,
      fleet: c.fleet,
      deviceId: c.deviceId,
      ...(c.token === undefined ? {} : { token: c.token, enrollment: c.enrollment }),
      ...(c.challenge === undefined ? {} : { challenge: encodeEnrollChallenge(c.challenge) }),
      ...(c.answer === undefined ? {} : { answer: encodeEnrollAnswer(c.answer) }),
    };
    const temp = `${this.#o.file}.tmp`;
    await writeFile(temp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
    await rename(temp, this.#o.file);
  }
}

function refusedBy(reply: FleetAnswer): FleetSyncError {
  const code = errorField(reply.body, 'code') ?? '';
  return new FleetSyncError('SYNC_ENROLL_REFUSED', `the fleet refused the enrollment (${reply.status} ${code}): ${errorField(reply.body, 'message') ?? ''}`, {
    fleetCode: code,
    status: reply.status,
  });
}
