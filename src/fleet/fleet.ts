/**
 * `startFleet`: the fleet service on a database and an address. The database is PGlite under
 * `data` (embedded, one process) unless `database` names a PostgreSQL server, which several
 * fleet processes may share (each device's row lock serialises its chain, wherever it arrives).
 */
import { join } from 'node:path';
import { loadCaDirectory } from '../enroll/index.js';
import { isLoopback, startHttpServer, type BindAddress, type ServerLimits } from '../serve/index.js';
import type { FleetApproval } from './enrollment.js';
import { FleetHandler, type FleetHttpLimits } from './http.js';
import { openPglite } from './pglite.js';
import { openPostgres } from './postgres.js';
import { openRepository } from './repository.js';
import { FleetService, type FleetServiceOptions } from './service.js';

/** Options of {@link startFleet}. */
export interface FleetOptions extends FleetServiceOptions {
  /** Directory of the fleet's own files: the PGlite cluster (`DIR/pglite`) when no `database` is given. */
  readonly data: string;
  /** `postgres://…` of a PostgreSQL server; default the embedded PGlite under `data`. */
  readonly database?: string;
  /**
   * Where to listen: a unix socket, loopback HTTP, or TLS anywhere (`SERVE_INSECURE_BIND` for plain
   * HTTP off loopback). Devices authenticate with the bearer token of their enrollment; a `tls.ca`
   * additionally requires client certificates signed by it.
   */
  readonly listen: BindAddress;
  /** Directory of the CA certificates EK certificates must chain to; without it, no self-enrollment. */
  readonly ca?: string;
  /** How self-enrolled devices are admitted: at once (`auto`, default) or once an operator approves (`manual`). */
  readonly approval?: FleetApproval;
  /** The operator's bearer token: the operator's routes off loopback, and any device's routes. */
  readonly operatorToken?: string;
  readonly limits?: Partial<FleetHttpLimits>;
  readonly serverLimits?: Partial<ServerLimits>;
}

/** A running fleet. */
export interface Fleet {
  /** `http://HOST:PORT`, `https://HOST:PORT` or `unix:PATH`. */
  readonly address: string;
  readonly service: FleetService;
  readonly handler: FleetHandler;
  /** Stops listening, then closes the database. */
  close(): Promise<void>;
}

/**
 * Opens the database, migrates it, loads the fleet key and listens.
 * @example
 * ```ts
 * const fleet = await startFleet({ data: '/var/lib/imakeep-fleet', listen: { host: '127.0.0.1', port: 8443 } });
 * ```
 * @throws {FLEET_STORAGE} the database cannot be opened or reached
 * @throws {FLEET_SCHEMA} the database holds a schema newer than this version
 * @throws {SERVE_INSECURE_BIND} `listen` is off loopback without TLS client certificates
 */
export async function startFleet(options: FleetOptions): Promise<Fleet> {
  // The CA directory first: a mistake there must not cost a database open.
  const anchors = options.ca === undefined ? undefined : await loadCaDirectory(options.ca);
  const db = options.database === undefined ? await openPglite(join(options.data, 'pglite')) : openPostgres(options.database);
  const repository = await openRepository(db);
  try {
    const enrollment = { ...options.enrollment, ...(anchors === undefined ? {} : { anchors }), ...(options.approval === undefined ? {} : { approval: options.approval }) };
    const service = await FleetService.open(repository, { ...options, enrollment });
    const listen = options.listen;
    const trustedNetwork = 'socket' in listen || (listen.tls === undefined && isLoopback(listen.host));
    const handler = new FleetHandler(service, options.limits, { trustedNetwork, ...(options.operatorToken === undefined ? {} : { operatorToken: options.operatorToken }) });
    // Bodies of pushes are verified as they arrive: a request may take longer than a GET.
    const server = await startHttpServer(handler.listener, options.listen, { requestTimeoutMs: 300_000, maxConnections: 1024, ...options.serverLimits });
    let closed: Promise<void> | undefined;
    return {
      address: server.address,
      service,
      handler,
      close() {
        closed ??= server.close().then(() => repository.close());
        return closed;
      },
    };
  } catch (e) {
    await repository.close().catch(() => undefined);
    throw e;
  }
}
