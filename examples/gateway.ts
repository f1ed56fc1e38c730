/**
 * Example: gateway firmware that embeds imakeep as a library (no CLI, no second process). The
 * firmware owns its main loop: it runs a collection cycle when its own scheduler says so (here:
 * after every N new measurements, or on a timer), serves the API on a unix socket for the local
 * attestation agent, and exports its metrics to the firmware's telemetry. Everything goes through
 * the public modules: `store`, `tpm`, `collector`, `serve`.
 *
 *   node dist/examples/gateway.js --store /data/imakeep --tpm device:/dev/tpmrm0 [--socket PATH]
 *                                 [--securityfs /sys/kernel/security] [--cycles N]
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Collector, type CycleReport, type CollectorStatus } from '../src/collector/index.js';
import { startApiServer, type ApiServer, type KernelTail, type MetricSample } from '../src/serve/index.js';
import type { BankName } from '../src/ima/index.js';
import { openStore, type ImaStore } from '../src/store/index.js';
import { Tpm, TpmQuoter } from '../src/tpm/index.js';

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

/** The collector's kernel tail, as the server reads it (the current boot, read between cycles). */
function kernelTail(collector: Collector): KernelTail {
  return {
    get boot() {
      return collector.boot;
    },
    end: () => Promise.resolve(collector.kernelEnd()),
    records: (from) => collector.tailBatches(from),
  };
}

/** A few numbers of the collector's status, as samples for `/metrics`. */
function collectorSamples(s: CollectorStatus): MetricSample[] {
  return [
    { name: 'imakeep_gateway_removed_records', help: 'Records removed from the kernel this boot (T).', type: 'gauge', value: s.removed },
    { name: 'imakeep_gateway_stored_records', help: 'Records in committed chunks this boot.', type: 'gauge', value: s.stored },
    { name: 'imakeep_gateway_kernel_records', help: 'Records still in the kernel.', type: 'gauge', value: s.kernelRecords },
  ];
}

/** The embedded imakeep: store, collector and API server of one gateway. */
export class Gateway {
  readonly store: ImaStore;
  readonly collector: Collector;
  readonly server: ApiServer;
  readonly #tpm: Tpm;
  readonly #ownsTpm: boolean;

  private constructor(store: ImaStore, collector: Collector, server: ApiServer, tpm: Tpm, ownsTpm: boolean) {
    this.store = store;
    this.collector = collector;
    this.server = server;
    this.#tpm = tpm;
    this.#ownsTpm = ownsTpm;
  }

  /** Opens the store and the TPM, recovers the collector (finishing any removal a crash interrupted), starts the API. */
  static async start(options: GatewayOptions): Promise<Gateway> {
    const ownsTpm = typeof options.tpm === 'string';
    const tpm = typeof options.tpm === 'string' ? Tpm.open(options.tpm) : options.tpm;
    const store = await openStore(options.storeDir);
    try {
      const collector = await Collector.open({
        store,
        quotes: new TpmQuoter(tpm, { releaseAfterUse: false }),
        securityfsRoot: options.securityfsRoot,
        bootIdPath: options.bootIdPath,
        cmdlinePath: options.cmdlinePath,
        banks: options.banks,
      });
      const server = await startApiServer(
        {
          store,
          tail: kernelTail(collector),
          quotes: new TpmQuoter(tpm),
          status: { status: async () => ({ ...collector.status() }), metrics: async () => collectorSamples(collector.status()) },
        },
        { socket: options.socket ?? join(options.storeDir, 'imakeep.sock') },
      );
      return new Gateway(store, collector, server, tpm, ownsTpm);
    } catch (e) {
      await store.close();
      if (ownsTpm) await tpm.close();
      throw e;
    }
  }

  /** One collection cycle, when the firmware's scheduler decides: drain, store, quote, remove. */
  cycle(): Promise<CycleReport> {
    return this.collector.runOnce();
  }

  /** Stops serving, closes the collector, the store and (if it opened it) the TPM. */
  async stop(): Promise<void> {
    await this.server.close();
    await this.collector.close();
    await this.store.close();
    if (this.#ownsTpm) await this.#tpm.close();
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
