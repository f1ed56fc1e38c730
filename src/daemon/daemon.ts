/**
 * `startDaemon`: the whole imakeep daemon in one call, for `imakeep run` and for firmware that
 * embeds it. It owns the one TPM connection and attestation key (a single `TpmQuoter`: the
 * collector's checkpoints and the API's verifier quotes never interleave), opens the store and the
 * collector (recovering whatever a crash interrupted), runs the cycle on the collector's schedule,
 * serves the HTTP API with the daemon's status and metrics, and stops cleanly on an `AbortSignal`.
 */
import { rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { Collector, type CollectorOptions, type CollectorStatus, type CycleReport } from '../collector/index.js';
import type { KeyObject } from 'node:crypto';
import { startApiServer, type ApiOptions, type ApiServer, type TlsFiles } from '../serve/index.js';
import { openStore, type ImaStore } from '../store/index.js';
import { Tpm, TpmQuoter, type TpmQuoterOptions } from '../tpm/index.js';
import type { Backoff } from './backoff.js';
import type { FleetSync, SyncRound } from './fleet-sync.js';
import { daemonStatus } from './metrics.js';
import { daemonPaths, type DaemonPaths } from './process.js';
import { collectorTail } from './tail.js';

/** The collector's options a daemon takes (the store and the TPM are the daemon's own). */
export type DaemonCollectorOptions = Omit<CollectorOptions, 'store' | 'quotes'>;

/** The daemon's HTTP API. */
export interface DaemonApiOptions {
  /** Unix socket of the API (mode 0660); default `<storeDir>/imakeep.sock`. A stale file there is removed. */
  readonly socket?: string;
  /**
   * The API also on TCP, as a Keylime verifier pulls it: HTTPS requiring client certificates signed
   * by `tls.ca` (mTLS, Keylime's default) or, without `tls`, plain HTTP on a loopback address only
   * (`SERVE_INSECURE_BIND` otherwise). Port 0 picks a free port (see `Daemon.tcp.address`).
   */
  readonly listen?: { readonly host: string; readonly port: number; readonly tls?: TlsFiles };
}

/** Keylime mode of the daemon (README, "Keylime"). */
export interface DaemonKeylimeOptions {
  /** The payload key (RSA; `openPayloadKey` of imakeep/serve keeps one in a file). */
  readonly payloadKey: KeyObject;
}

/** The fleet the daemon syncs its evidence to (README "Fleet"). */
export interface DaemonFleetOptions {
  /** `http://HOST:PORT` on loopback, else `https://HOST:PORT`. */
  readonly url: string;
  /** PEM of the CA the fleet's TLS certificate chains to (default: the system's CAs). */
  readonly ca?: string;
  /** The device's id at the fleet; default the host name. */
  readonly deviceId?: string;
  /**
   * `true` (default): enroll on first contact (EK certificate, credential activation) and use the
   * bearer token the fleet gives; `false`: an operator enrolled the device's AK (loopback fleets).
   */
  readonly enroll?: boolean;
  /** Between sync rounds while the fleet is reachable; default 60 s. */
  readonly intervalMs?: number;
  /** Drop finished boots the fleet acknowledged whole once first seen at least this long ago; default 0 (at once). */
  readonly retainMs?: number;
  /** Retry delays while the fleet is unreachable (bounded, jittered); default 1 s doubling to 5 min. */
  readonly backoff?: Backoff;
  /** Largest bundle pushed; default 1 MiB. */
  readonly maxBundleBytes?: number;
}

/** Options of {@link startDaemon}. */
export interface DaemonOptions {
  /** The store directory; the daemon opens and closes the store (LevelDB admits one process). */
  readonly storeDir: string;
  /**
   * A TPM address (`device:/dev/tpmrm0`, `swtpm:HOST:PORT`), opened and closed by the daemon, or a
   * connection the caller holds (then left open at stop).
   */
  readonly tpm: string | Tpm;
  /** The attestation key and connection use of the daemon's one quoter; default an ECC AK in the endorsement hierarchy. */
  readonly ak?: TpmQuoterOptions;
  /** What the collector reads, how it removes, when it cycles (`securityfsRoot`, `flavor`, `intervalMs`...). */
  readonly collector?: DaemonCollectorOptions;
  readonly api?: DaemonApiOptions;
  /**
   * Keylime mode: the agent's routes, quoting with an RSA 2048 AK (RSASSA-SHA256, the `ak`
   * hierarchy) through a second quoter on the same TPM and queue; the collector and `/v1/quote`
   * keep the `ak` (ECC by default: 180x cheaper per quote, README "Keylime").
   */
  readonly keylime?: DaemonKeylimeOptions;
  /**
   * Sync to a fleet: enroll on first contact, push from the last acknowledged cursor, answer its
   * freshness challenges, apply retention on acknowledgement, back off while it is down.
   */
  readonly fleet?: DaemonFleetOptions;
  /** Called after every fleet sync round with what it did, or its error (`FleetSyncError`...). */
  readonly onSync?: (round: SyncRound | undefined, error: unknown) => void;
  /**
   * `scheduled` (default): cycles run on the collector's schedule (every `intervalMs`, earlier when
   * the kernel's list grows past its thresholds) until the daemon stops. `manual`: only when the
   * caller calls {@link Daemon.cycle} (firmware with its own main loop).
   */
  readonly cycles?: 'scheduled' | 'manual';
  /** Called after every scheduled cycle with its report or its error, and the status after it (written to the status file first). */
  readonly onCycle?: (report: CycleReport | undefined, error: unknown, status: CollectorStatus) => void;
  /** Stops the daemon when aborted (as {@link Daemon.stop}). */
  readonly signal?: AbortSignal;
}

/** A running daemon. */
export interface Daemon {
  readonly store: ImaStore;
  readonly collector: Collector;
  readonly server: ApiServer;
  /** The TCP listener, when `api.listen` is given. */
  readonly tcp: ApiServer | undefined;
  /** The fleet sync, when `fleet` is given (its `status()` is also in `/v1/status`). */
  readonly fleet: FleetSync | undefined;
  /** The daemon's files: the API socket and the status file `imakeep status` reads. */
  readonly paths: DaemonPaths;
  /** One cycle now (drain, store, quote, remove), then the status file. */
  cycle(): Promise<CycleReport>;
  /** Stops: lets the running cycle finish its step, stops serving, closes collector, store and TPM. */
  stop(): Promise<void>;
  /**
   * Settles once the daemon has stopped and closed everything: by {@link stop}, the signal, or an
   * error that ends the schedule (`COLLECTOR_RECOVERY_FAILED`, store corruption), which it rejects with.
   */
  readonly stopped: Promise<void>;
}

/**
 * Starts the daemon: store, TPM, collector (with recovery), API server, and the schedule.
 *
 * @example
 * ```ts
 * import { startDaemon } from 'imakeep/daemon';
 * const stop = new AbortController();
 * process.once('SIGTERM', () => stop.abort());
 * const daemon = await startDaemon({ storeDir: '/var/lib/imakeep', tpm: 'device:/dev/tpmrm0', signal: stop.signal });
 * await daemon.stopped;
 * ```
 * @throws `StoreError` (`STORE_LOCKED`: another process holds the store; `STORE_CORRUPT`...),
 *   `TpmError` and `TpmTransportError` (the TPM cannot be reached or refuses the AK),
 *   `CollectorError` (`COLLECTOR_RECOVERY_FAILED`, `KERNEL_*` when securityfs cannot be read);
 *   everything opened so far is closed again.
 */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const paths = daemonPaths(options.storeDir);
  const socket = options.api?.socket ?? paths.socket;
  const ownsTpm = typeof options.tpm === 'string';
  const tpm = typeof options.tpm === 'string' ? Tpm.open(options.tpm) : options.tpm;
  const quoter = new TpmQuoter(tpm, options.ak);
  const closeTpm = async (): Promise<void> => {
    if (ownsTpm) await quoter.close();
  };
  let store: ImaStore;
  try {
    store = await openStore(options.storeDir);
  } catch (e) {
    await closeTpm();
    throw e;
  }
  let collector: Collector | undefined;
  let server: ApiServer | undefined;
  let tcp: ApiServer | undefined;
  let fleet: FleetSync | undefined;
  try {
    collector = await Collector.open({ ...options.collector, store, quotes: quoter });
    const opened = collector;
    fleet = options.fleet === undefined ? undefined : await fleetSync(options.fleet, { store, quoter, paths, ak: options.ak, kernelBootId: () => opened.status().kernelBootId });
    const synced = fleet;
    // A socket left by a killed daemon (this process holds the store lock: no daemon serves it).
    rmSync(socket, { force: true });
    const api: ApiOptions = {
      store,
      tail: collectorTail(opened),
      quotes: quoter,
      status: daemonStatus(() => opened.status(), synced === undefined ? undefined : () => synced.status()),
      ...(options.keylime === undefined ? {} : { keylime: { payloadKey: options.keylime.payloadKey, quotes: new TpmQuoter(tpm, { ...options.ak, alg: 'rsa' }) } }),
    };
    server = await startApiServer(api, { socket });
    const listen = options.api?.listen;
    if (listen !== undefined) tcp = await startApiServer(api, listen);
  } catch (e) {
    await server?.close();
    await collector?.close();
    await store.close();
    await closeTpm();
    throw e;
  }
  return running(options, { store, collector, server, tcp, fleet, paths, closeTpm });
}

/**
 * The fleet sync of a daemon: self-enrollment through the daemon's quoter, freshness quotes with
 * its AK. Its modules are loaded here, only with a fleet: the client and the enrollment exchange
 * (src/enroll, and the TPM's credential activation it drives) are ~1,100 of the ~11,450 lines
 * `imakeep run` loaded, and node:https with them (`node scripts/surface.mjs`, and the V8 heap
 * and RSS figures of bench/results/lean.md, "What `imakeep run` loads").
 */
async function fleetSync(
  f: DaemonFleetOptions,
  parts: { store: ImaStore; quoter: TpmQuoter; paths: DaemonPaths; ak: TpmQuoterOptions | undefined; kernelBootId: () => string },
): Promise<FleetSync> {
  const [{ FleetEnroller }, { FleetSync, FRESH_PCR }] = await Promise.all([import('./fleet-client.js'), import('./fleet-sync.js')]);
  const deviceId = f.deviceId ?? hostname();
  const endpoint = { url: f.url, ...(f.ca === undefined ? {} : { ca: f.ca }) };
  const ak = { ...(parts.ak?.alg === undefined ? {} : { alg: parts.ak.alg }), ...(parts.ak?.hierarchy === undefined ? {} : { hierarchy: parts.ak.hierarchy }) };
  const enroller =
    f.enroll === false
      ? undefined
      : new FleetEnroller({ endpoint, deviceId, kernelBootId: parts.kernelBootId, useTpm: (task) => parts.quoter.use(task), ak, file: parts.paths.fleetCredentials });
  return new FleetSync({
    fleetUrl: f.url,
    ...(f.ca === undefined ? {} : { fleetCa: f.ca }),
    deviceId,
    store: parts.store,
    ...(enroller === undefined ? {} : { enroller }),
    freshQuote: (nonce) => parts.quoter.quoteAndRead(nonce, [FRESH_PCR]),
    retainMs: f.retainMs ?? 0,
    ...(f.backoff === undefined ? {} : { backoff: f.backoff }),
    ...(f.maxBundleBytes === undefined ? {} : { maxBundleBytes: f.maxBundleBytes }),
  });
}

/** Default time between fleet sync rounds. */
const DEFAULT_SYNC_INTERVAL_MS = 60_000;

function running(
  options: DaemonOptions,
  parts: {
    store: ImaStore;
    collector: Collector;
    server: ApiServer;
    tcp: ApiServer | undefined;
    fleet: FleetSync | undefined;
    paths: DaemonPaths;
    closeTpm: () => Promise<void>;
  },
): Daemon {
  const { store, collector, server, tcp, fleet, paths } = parts;
  const stopping = new AbortController();
  const stopOnSignal = (): void => stopping.abort();
  options.signal?.addEventListener('abort', stopOnSignal, { once: true });
  if (options.signal?.aborted === true) stopping.abort();
  const writeStatus = (): void => collector.writeStatusFile(paths.statusFile);

  const schedule = async (): Promise<void> => {
    if (options.cycles === 'manual') {
      await new Promise<void>((resolve) => stopping.signal.addEventListener('abort', () => resolve(), { once: true }));
      return;
    }
    await collector.run(stopping.signal, (report, error) => {
      writeStatus();
      options.onCycle?.(report, error, collector.status());
    });
  };
  // The sync runs beside the schedule, on its own interval; it ends when the daemon stops.
  const syncing =
    fleet?.run(
      options.fleet?.intervalMs ?? DEFAULT_SYNC_INTERVAL_MS,
      stopping.signal,
      (round) => options.onSync?.(round, undefined),
      (error) => options.onSync?.(undefined, error),
    ) ?? Promise.resolve();
  const shutDown = async (): Promise<void> => {
    options.signal?.removeEventListener('abort', stopOnSignal);
    stopping.abort();
    await syncing.catch(() => undefined);
    writeStatus();
    await tcp?.close();
    await server.close();
    await collector.close();
    await store.close();
    await parts.closeTpm();
  };
  const stopped = schedule().then(shutDown, async (e: unknown) => {
    await shutDown();
    throw e;
  });
  // A caller that only uses stop() still learns of a failure through stop(); never unhandled here.
  stopped.catch(() => undefined);
  return {
    store,
    collector,
    server,
    tcp,
    fleet,
    paths,
    async cycle() {
      const report = await collector.runOnce();
      writeStatus();
      return report;
    },
    async stop() {
      stopping.abort();
      await stopped;
    },
    stopped,
  };
}
