/**
 * Example: gateway firmware that embeds imakeep as a library (no CLI, no second process). The
 * firmware owns its main loop: it runs a collection cycle when its own scheduler says so (here:
 * after every N new measurements, or on a timer), serves the API on a unix socket for the local
 * attestation agent, and exports its metrics to the firmware's telemetry. The daemon is assembled by
 * `startDaemon` (`imakeep/daemon`), its cycles left to the firmware (`cycles: 'manual'`).
 *
 *   node dist/examples/gateway.js --store /data/imakeep --tpm device:/dev/tpmrm0 [--socket PATH]
 *                                 [--securityfs /sys/kernel/security] [--cycles N]
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { Collector, CycleReport } from '../src/collector/index.js';
import { startDaemon, type Daemon } from '../src/daemon/index.js';
import type { BankName } from '../src/ima/index.js';
import type { ApiServer } from '../src/serve/index.js';
import type { ImaStore } from '../src/store/index.js';
import type { Tpm } from '../src/tpm/index.js';

/** Options of {@link Gateway.start}. */
export interface GatewayOptions {
  readonly storeDir: string;
  /** A TPM address (`device:/dev/tpmrm0`, `swtpm:HOST:PORT`) or a connection the firmware already holds. */
  readonly tpm: string | Tpm;
  /** Where the API listens; default `<storeDir>/imakeep.sock`. */
  readonly socket?: string;
  /** securityfs mount (default `/sys/kernel/security`); tests point it at the emulator. */
  readonly securityfsRoot?: string;
  readonly bootIdPath?: string;
  readonly cmdlinePath?: string;
  /** PCR banks to quote and replay; default every bank the TPM has active. */
  readonly banks?: readonly BankName[];
}

/** The embedded imakeep: the daemon with its cycles on the firmware's schedule. */
export class Gateway {
  readonly #daemon: Daemon;

  private constructor(daemon: Daemon) {
    this.#daemon = daemon;
  }

  /** Opens the store and the TPM, recovers the collector (finishing any removal a crash interrupted), starts the API. */
  static async start(options: GatewayOptions): Promise<Gateway> {
    const { storeDir, tpm, socket, securityfsRoot, bootIdPath, cmdlinePath, banks } = options;
    return new Gateway(await startDaemon({ storeDir, tpm, api: { socket }, collector: { securityfsRoot, bootIdPath, cmdlinePath, banks }, cycles: 'manual' }));
  }

  get store(): ImaStore {
    return this.#daemon.store;
  }

  get collector(): Collector {
    return this.#daemon.collector;
  }

  get server(): ApiServer {
    return this.#daemon.server;
  }

  /** One collection cycle, when the firmware's scheduler decides: drain, store, quote, remove. */
  cycle(): Promise<CycleReport> {
    return this.#daemon.cycle();
  }

  /** Stops serving, closes the collector, the store and (if it opened it) the TPM. */
  stop(): Promise<void> {
    return this.#daemon.stop();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { store: { type: 'string' }, tpm: { type: 'string' }, socket: { type: 'string' }, securityfs: { type: 'string' }, cycles: { type: 'string' } },
  });
  if (values.store === undefined || values.tpm === undefined) throw new Error('usage: gateway --store DIR --tpm ADDR [--socket PATH] [--securityfs DIR] [--cycles N]');
  const gateway = await Gateway.start({ storeDir: values.store, tpm: values.tpm, socket: values.socket, securityfsRoot: values.securityfs });
  process.stdout.write(`gateway: serving ${gateway.server.address}\n`);
  try {
    for (let i = 0; i < Number(values.cycles ?? '1'); i++) {
      const r = await gateway.cycle();
      process.stdout.write(`cycle ${i}: drained ${r.drained}, stored ${r.stored}, checkpoint ${r.checkpoint ?? '-'}, removed ${r.removed}\n`);
    }
  } finally {
    await gateway.stop();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
