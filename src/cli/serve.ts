/**
 * `imakeep serve`: the HTTP API over a store, without the collector (an archive, or a device whose
 * daemon is stopped): the stored log, evidence bundles, status; quotes when given a TPM. While
 * `imakeep run` holds the store, it serves the same API itself on its socket.
 *
 *   imakeep serve --store DIR [--socket PATH | --listen HOST:PORT [--tls-cert F --tls-key F --tls-ca F]] [--tpm ADDR]
 *                 [--securityfs DIR [--boot-id-file PATH]]
 *
 * With `--securityfs`, and when the running kernel is the store's current boot, the records still
 * in the kernel are served after the stored ones (nothing removes records while the daemon is
 * down, so the kernel positions found at start stay valid).
 */
import { UsageError } from '../errors.js';
import { DEFAULT_BOOT_ID_PATH, runningKernelTail } from '../collector/index.js';
import { daemonPaths } from '../daemon/index.js';
import { startApiServer, type ListenAddress } from '../serve/index.js';
import { openStore } from '../store/index.js';
import { Tpm, TpmQuoter } from '../tpm/index.js';
import { interruptSignal, parseVerbArgs, requireOptions } from './_verb.js';

/** Usage of `imakeep serve`. */
export const usage = `usage: imakeep serve --store DIR [--socket PATH | --listen HOST:PORT] [--tpm ADDR]
                     [--tls-cert FILE --tls-key FILE --tls-ca FILE] [--securityfs DIR [--boot-id-file PATH]]
Default: unix socket DIR/imakeep.sock (mode 0660). TCP binds loopback only, unless TLS with client
certificates (--tls-*: server certificate and key, CA of the client certificates) is given.
ADDR: swtpm:HOST:PORT | device:/dev/tpmrm0 (enables GET /v1/quote).`;

export function listenAddress(values: { socket?: string; listen?: string; 'tls-cert'?: string; 'tls-key'?: string; 'tls-ca'?: string }, storeDir: string): ListenAddress {
  if (values.listen === undefined) return { socket: values.socket ?? daemonPaths(storeDir).socket };
  if (values.socket !== undefined) throw new UsageError('--socket and --listen exclude each other');
  const m = /^(.+):(\d{1,5})$/.exec(values.listen);
  const host = m?.[1]?.replace(/^\[(.*)\]$/, '$1');
  const port = Number(m?.[2]);
  if (host === undefined || !(port >= 0 && port <= 65535)) throw new UsageError(`--listen must be HOST:PORT, got '${values.listen}'`);
  const tls = [values['tls-cert'], values['tls-key'], values['tls-ca']];
  if (tls.every((f) => f === undefined)) return { host, port };
  const [cert, key, ca] = tls;
  if (cert === undefined || key === undefined || ca === undefined) throw new UsageError('TLS needs all of --tls-cert, --tls-key and --tls-ca');
  return { host, port, tls: { cert, key, ca } };
}

/** The `serve` verb: runs until SIGINT or SIGTERM. */
export default async function serve(argv: string[]): Promise<number> {
  const { values } = parseVerbArgs(
    argv,
    {
      store: { type: 'string' },
      socket: { type: 'string' },
      listen: { type: 'string' },
      tpm: { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      securityfs: { type: 'string' },
      'boot-id-file': { type: 'string' },
    },
    false,
  );
  const { store: storeDir } = requireOptions(values, ['store']);
  const address = listenAddress(values, storeDir);
  const store = await openStore(storeDir);
  const tpm = values.tpm === undefined ? undefined : Tpm.open(values.tpm);
  const stop = interruptSignal();
  try {
    const tail = values.securityfs === undefined ? undefined : await runningKernelTail(store, values.securityfs, values['boot-id-file'] ?? DEFAULT_BOOT_ID_PATH);
    const server = await startApiServer({ store, tail, quotes: tpm === undefined ? undefined : new TpmQuoter(tpm) }, address);
    process.stdout.write(`imakeep serve: ${server.address}\n`);
    await stop.interrupted;
    await server.close();
  } finally {
    stop.dispose();
    await tpm?.close();
    await store.close();
  }
  return 0;
}
