/**
 * The device side of the fleet (`src/fleet`): pushes the store's evidence bundles from the last
 * cursor the fleet acknowledged, one bundle per request (memory: one bundle), until caught up;
 * resumes after a cut at the cursor the fleet names (`FLEET_REPLAYED`/`FLEET_GAP` carry it, so a
 * lost acknowledgement costs one refused request and nothing is counted twice); backs off while
 * the fleet is unreachable (bounded, jittered exponential); answers the fleet's freshness
 * challenge with a quote over its nonce; and marks what is acknowledged as exported in the store,
 * so retention (`ImaStore.dropBoot`) may drop finished boots the fleet holds, and only those.
 *
 * The fleet's HTTP API is this module's only contact with it (the layers keep the daemon below
 * the fleet): paths, content types and the error body's `code` and `details.cursor`. A device
 * that enrolls itself (`fleet-client.ts`) sends the bearer token of its enrollment; one the fleet
 * stops taking (401) is forgotten and the device enrolls again at the next round.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { toHex } from '../ima/index.js';
import { buildBundle, formatCursor, parseCursor, type EvidenceCursor } from '../serve/index.js';
import type { ImaStore } from '../store/index.js';
import type { QuoteWithPcrs } from '../tpm/index.js';
import { backoffDelay, DEFAULT_BACKOFF, type Backoff } from './backoff.js';
import { errorField, fleetCall, type DeviceEnrollmentState, type FleetAnswer, type FleetEndpoint, type FleetEnroller } from './fleet-client.js';
import { FleetSyncError } from './fleet-error.js';

/** Options of {@link FleetSync}. */
export interface FleetSyncOptions {
  /** `http://HOST:PORT` of the fleet (loopback), or `https://…`. */
  readonly fleetUrl: string;
  /** PEM of the CA the fleet's TLS certificate chains to. */
  readonly fleetCa?: string;
  readonly deviceId: string;
  /** Self-enrollment: the bearer token comes from it; without it the device was enrolled by an operator. */
  readonly enroller?: FleetEnroller;
  readonly store: ImaStore;
  /**
   * Quotes over the fleet's nonce with the enrolled AK, to answer freshness challenges (a daemon
   * passes its quoter: `(n) => quoter.quoteAndRead(n, [FRESH_PCR])`); without it they go unanswered.
   */
  readonly freshQuote?: (nonce: Uint8Array) => Promise<FreshQuote>;
  /** Largest bundle pushed (bytes of chunks and checkpoints); default 1 MiB. */
  readonly maxBundleBytes?: number;
  /** After an acknowledgement, drop finished boots the fleet holds that were first seen at least this long ago. */
  readonly retainMs?: number;
  readonly backoff?: Backoff;
  readonly random?: () => number;
  /** How a wait is made (tests record the delays). */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** A quote as the fleet checks it: signed attest and the PCR values it covers. */
export type FreshQuote = Pick<QuoteWithPcrs, 'attest' | 'signature' | 'pcrs'>;

/** What one sync round did. */
export interface SyncRound {
  readonly bundles: number;
  readonly records: number;
  /** Where the fleet's verified evidence ends now. */
  readonly cursor: string;
  /** The newest acknowledgement token. */
  readonly token: string | null;
  /** Requests refused because the fleet already held the bundle (a lost acknowledgement). */
  readonly resumed: number;
  readonly freshAt: string | null;
  readonly dropped: readonly number[];
}

/** What the daemon's status shows of the sync. */
export interface FleetSyncStatus {
  readonly url: string;
  readonly deviceId: string;
  readonly enrollment: DeviceEnrollmentState;
  /** `syncing`, `idle` (caught up), `backing-off` (the fleet is unreachable), `refused` (the last round was refused). */
  readonly state: 'starting' | 'syncing' | 'idle' | 'backing-off' | 'refused';
  /** Where the fleet's verified evidence ends, as last acknowledged. */
  readonly cursor: string | null;
  readonly lastAckAt: string | null;
  readonly freshAt: string | null;
  /** Since start: bundles and records acknowledged, boots dropped by retention. */
  readonly bundlesAcknowledged: number;
  readonly recordsAcknowledged: number;
  readonly bootsDropped: number;
  /** Rounds failed in a row, and the last failure. */
  readonly failures: number;
  readonly lastError: { readonly code: string; readonly fleetCode: string | null; readonly message: string; readonly at: string } | null;
  /** Failures since start by code. */
  readonly errors: Readonly<Record<string, number>>;
}

/** The PCR a freshness quote covers: PCR 0 (firmware) does not move while the system runs. */
export const FRESH_PCR = { bank: 'sha256', pcr: 0 } as const;

/** Pushes a device's evidence to the fleet. */
export class FleetSync {
  readonly #o: FleetSyncOptions;
  readonly #endpoint: FleetEndpoint;
  #cursor: EvidenceCursor | undefined;
  #token: string | null = null;
  #bearer: string | undefined;
  #signal: AbortSignal | undefined;
  #state: FleetSyncStatus['state'] = 'starting';
  #lastAckAt: string | null = null;
  #freshAt: string | null = null;
  #bundles = 0;
  #records = 0;
  #dropped = 0;
  #failures = 0;
  #lastError: FleetSyncStatus['lastError'] = null;
  readonly #errors: Record<string, number> = {};

  constructor(options: FleetSyncOptions) {
    this.#o = options;
    this.#endpoint = { url: options.fleetUrl, ...(options.fleetCa === undefined ? {} : { ca: options.fleetCa }) };
  }

  /** The sync as the daemon's status shows it. */
  status(): FleetSyncStatus {
    return {
      url: this.#o.fleetUrl,
      deviceId: this.#o.deviceId,
      enrollment: this.#o.enroller?.state ?? 'approved',
      state: this.#state,
      cursor: this.#cursor === undefined ? null : formatCursor(this.#cursor),
      lastAckAt: this.#lastAckAt,
      freshAt: this.#freshAt,
      bundlesAcknowledged: this.#bundles,
      recordsAcknowledged: this.#records,
      bootsDropped: this.#dropped,
      failures: this.#failures,
      lastError: this.#lastError,
      errors: { ...this.#errors },
    };
  }

  async #call(path: string, init: { method: 'GET' | 'POST'; body?: Uint8Array | string; type?: string }): Promise<FleetAnswer> {
    const answer = await fleetCall(this.#endpoint, path, {
      ...init,
      ...(this.#bearer === undefined ? {} : { token: this.#bearer }),
      ...(this.#signal === undefined ? {} : { signal: this.#signal }),
    });
    if (answer.status === 401 && this.#o.enroller !== undefined) {
      // The fleet no longer takes this token (re-enrolled elsewhere, database restored): enroll again next round.
      await this.#o.enroller.forget();
    }
    return answer;
  }

  /** Where to push from: the last acknowledgement, or the fleet's newest one, or the store's start. */
  async #start(): Promise<EvidenceCursor | undefined> {
    if (this.#cursor !== undefined) return this.#cursor;
    const ack = await this.#call(`/v1/devices/${encodeURIComponent(this.#o.deviceId)}/ack`, { method: 'GET' });
    if (ack.status === 200 && typeof ack.body.cursor === 'string') {
      this.#token = typeof ack.body.token === 'string' ? ack.body.token : null;
      return parseCursor(ack.body.cursor);
    }
    return undefined;
  }

  /** Pushes until the fleet holds everything the store can export now (enrolling first when needed). */
  async syncOnce(signal?: AbortSignal): Promise<SyncRound> {
    this.#signal = signal;
    this.#bearer = await this.#o.enroller?.token(signal);
    let cursor = await this.#start();
    let bundles = 0;
    let records = 0;
    let resumed = 0;
    let challenge: string | null = null;
    const path = `/v1/devices/${encodeURIComponent(this.#o.deviceId)}/evidence`;
    for (;;) {
      const built = await buildBundle(this.#o.store, cursor, { maxBytes: this.#o.maxBundleBytes ?? 1024 * 1024 });
      if (built.bundle.segments.every((s) => s.chunks.length === 0 && s.checkpoints.length === 0)) break; // nothing new
      const answer = await this.#call(path, { method: 'POST', body: built.bytes, type: 'application/cbor' });
      if (answer.status === 200) {
        bundles++;
        records += Number(answer.body.records ?? 0);
        this.#bundles++;
        this.#records += Number(answer.body.records ?? 0);
        this.#lastAckAt = new Date().toISOString();
        this.#token = String(answer.body.token);
        challenge = typeof answer.body.challenge === 'string' ? answer.body.challenge : challenge;
        cursor = parseCursor(String(answer.body.cursor));
        this.#cursor = cursor;
        await this.#acknowledged(cursor);
        continue;
      }
      const code = errorField(answer.body, 'code') ?? '';
      const at = detailsCursor(answer.body);
      // The fleet holds more than this device thought (an acknowledgement lost in a cut): go on from there.
      if ((code === 'FLEET_REPLAYED' || code === 'FLEET_GAP') && at !== undefined && (cursor === undefined || formatCursor(at) !== formatCursor(cursor)) && resumed < 3) {
        resumed++;
        cursor = at;
        this.#cursor = at;
        await this.#acknowledged(at);
        continue;
      }
      throw new FleetSyncError('SYNC_REFUSED', `fleet refused the bundle from ${cursor === undefined ? 'the start' : formatCursor(cursor)}: ${code} ${errorField(answer.body, 'message') ?? ''}`, {
        fleetCode: code,
        status: answer.status,
        cursor: cursor === undefined ? '' : formatCursor(cursor),
      });
    }
    const freshAt = challenge === null ? null : await this.#answer(challenge);
    if (freshAt !== null) this.#freshAt = freshAt;
    const dropped = await this.#retain();
    this.#dropped += dropped.length;
    return { bundles, records, cursor: cursor === undefined ? '' : formatCursor(cursor), token: this.#token, resumed, freshAt, dropped };
  }

  /** Records in the store what the fleet acknowledged: every boot before the cursor's whole, its boot up to the cursor. */
  async #acknowledged(cursor: EvidenceCursor): Promise<void> {
    const store = this.#o.store;
    for await (const { boot } of store.boots()) {
      if (boot > cursor.boot) break;
      const upTo = boot < cursor.boot ? await store.storedCount(boot) : cursor.index;
      const record = await store.bootRecord(boot);
      if ((record.exported?.cursor ?? -1) < upTo) await store.markExported(boot, upTo);
    }
  }

  async #answer(challenge: string): Promise<string | null> {
    const freshQuote = this.#o.freshQuote;
    if (freshQuote === undefined) return null;
    const quote = await freshQuote(Buffer.from(challenge, 'hex'));
    const answer = await this.#call(`/v1/devices/${encodeURIComponent(this.#o.deviceId)}/quote`, {
      method: 'POST',
      type: 'application/json',
      body: JSON.stringify({
        attest: toHex(quote.attest),
        signature: toHex(quote.signature),
        pcrs: quote.pcrs.map((p) => ({ bank: p.bank, pcr: p.pcr, value: toHex(p.value) })),
      }),
    });
    return answer.status === 200 && typeof answer.body.freshAt === 'string' ? answer.body.freshAt : null;
  }

  /** Drops finished boots the fleet acknowledged whole (the store refuses any other). */
  async #retain(): Promise<number[]> {
    const olderThanMs = this.#o.retainMs;
    if (olderThanMs === undefined) return [];
    const store = this.#o.store;
    const dropped: number[] = [];
    const boots: number[] = [];
    for await (const { boot } of store.boots()) boots.push(boot);
    for (const boot of boots) {
      if (boot === store.currentBoot) continue;
      const record = await store.bootRecord(boot);
      if (record.exported === null || record.exported.cursor < (await store.storedCount(boot))) continue;
      if (Date.now() - record.firstSeen < olderThanMs) continue;
      await store.dropBoot(boot, { exportedAck: true, olderThanMs });
      dropped.push(boot);
    }
    return dropped;
  }

  /**
   * Syncs every `intervalMs` until `signal` aborts; while the fleet is unavailable, retries after
   * {@link backoffDelay}. Refusals are reported to `onError` and retried at the interval.
   */
  async run(intervalMs: number, signal: AbortSignal, onRound?: (round: SyncRound) => void, onError?: (e: unknown) => void): Promise<void> {
    const wait = this.#o.sleep ?? ((ms: number, s?: AbortSignal) => sleep(ms, undefined, { signal: s }).catch(() => undefined));
    const backoff = this.#o.backoff ?? DEFAULT_BACKOFF;
    const random = this.#o.random ?? Math.random;
    let unavailable = 0;
    while (!signal.aborted) {
      let delay = intervalMs;
      try {
        this.#state = 'syncing';
        const round = await this.syncOnce(signal);
        this.#state = 'idle';
        this.#failures = 0;
        unavailable = 0;
        onRound?.(round);
      } catch (e) {
        if (signal.aborted) break;
        const down = e instanceof FleetSyncError && e.code === 'SYNC_FLEET_UNAVAILABLE';
        this.#noteFailure(e, down);
        onError?.(e);
        if (down) delay = backoffDelay(unavailable++, backoff, random);
      }
      if (!signal.aborted) await wait(delay, signal);
    }
  }

  #noteFailure(e: unknown, down: boolean): void {
    const code = e instanceof FleetSyncError || (e instanceof Error && 'code' in e && typeof e.code === 'string') ? String((e as { code: unknown }).code) : 'ERROR';
    this.#state = down ? 'backing-off' : 'refused';
    this.#failures++;
    this.#errors[code] = (this.#errors[code] ?? 0) + 1;
    const fleetCode = e instanceof FleetSyncError ? (e.details.fleetCode ?? null) : null;
    this.#lastError = { code, fleetCode: fleetCode === '' ? null : fleetCode, message: e instanceof Error ? e.message : String(e), at: new Date().toISOString() };
  }
}

function detailsCursor(body: Record<string, unknown>): EvidenceCursor | undefined {
  const error = body.error;
  if (typeof error !== 'object' || error === null || !('details' in error)) return undefined;
  const details: unknown = error.details;
  if (typeof details !== 'object' || details === null || !('cursor' in details) || typeof details.cursor !== 'string') return undefined;
  try {
    return parseCursor(details.cursor);
  } catch {
    return undefined;
  }
}
