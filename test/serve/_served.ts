/**
 * The fixture of the HTTP tests (test/serve, test/verify): a CollectedDevice, a temporary
 * directory, and API servers over the device's store, all closed and removed by `close()`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApiServer, type ApiOptions, type ApiServer, type ServerLimits } from '../../src/serve/index.js';
import { CollectedDevice, type DeviceOptions } from './_collected.js';
import type { Target } from './_http.js';

/** A started server and how `get` reaches it. */
export interface Served {
  readonly server: ApiServer;
  readonly target: Target;
}

/** A CollectedDevice in its own temporary directory, with the API servers started over it. */
export class ServedDevice {
  readonly device: CollectedDevice;
  /** The temporary directory: sockets and the test's own files. */
  readonly work: string;
  readonly #servers: ApiServer[] = [];

  private constructor(device: CollectedDevice, work: string) {
    this.device = device;
    this.work = work;
  }

  /** Starts the device; `name` goes into the temporary directory's name. */
  static async start(name: string, options: DeviceOptions): Promise<ServedDevice> {
    const work = mkdtempSync(join(tmpdir(), `imakeep-${name}-`));
    try {
      return new ServedDevice(await CollectedDevice.start(options), work);
    } catch (e) {
      rmSync(work, { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * Starts an API server over the device's store (plus `api`: tail, quotes...) on
   * `work/api.sock` or, with `listen: 'loopback'`, on 127.0.0.1 at a free port.
   */
  async serve(api: Omit<ApiOptions, 'store'> = {}, listen: 'socket' | 'loopback' = 'socket', limits: Partial<ServerLimits> = {}): Promise<Served> {
    const options = { store: this.device.store, ...api };
    if (listen === 'socket') {
      const socket = join(this.work, 'api.sock');
      const server = await startApiServer(options, { socket }, limits);
      this.#servers.push(server);
      return { server, target: { socket } };
    }
    const server = await startApiServer(options, { host: '127.0.0.1', port: 0 }, limits);
    this.#servers.push(server);
    return { server, target: { host: '127.0.0.1', port: Number(new URL(server.address).port) } };
  }

  /** Closes the servers, then the device, then removes the temporary directory. */
  async close(): Promise<void> {
    try {
      for (const server of this.#servers) await server.close();
      await this.device.close();
    } finally {
      rmSync(this.work, { recursive: true, force: true });
    }
  }
}
