/**
 * `imakeep fleet`: the service devices sync their evidence to (src/fleet), on the embedded PGlite
 * under --data or on a PostgreSQL server shared by several fleet processes.
 *
 *   imakeep fleet --data DIR --listen HOST:PORT [--database postgres://…] [--tls-cert F --tls-key F --tls-ca F]
 *   imakeep fleet approve ID --ak FILE [--data DIR | --database URL]   (operator: enroll a device's AK)
 *   imakeep fleet refuse ID [--data DIR | --database URL]
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../errors.js';
import { FleetService, openPglite, openPostgres, openRepository, startFleet } from '../fleet/index.js';
import { interruptSignal, parseVerbArgs, requireOptions } from './_verb.js';
import { listenAddress } from './serve.js';

/** Usage of `imakeep fleet`. */
export const usage = `usage: imakeep fleet --data DIR --listen HOST:PORT [--database postgres://USER@HOST:PORT/DB]
                     [--tls-cert FILE --tls-key FILE --tls-ca FILE]
       imakeep fleet approve ID --ak FILE [--data DIR | --database URL]
       imakeep fleet refuse ID [--data DIR | --database URL]
Stores evidence in PGlite under DIR/pglite unless --database names a PostgreSQL server (several
fleet processes may share one). TCP binds loopback only, unless TLS with client certificates is
given. approve: the device's AK as a TPM2B_PUBLIC file (tpm2_createak -u), accepted from then on.
Prints its address and the fleet public key (PEM, also at GET /v1/key) for \`imakeep verify --from-token\`.`;

const OPTIONS = {
  data: { type: 'string' },
  database: { type: 'string' },
  listen: { type: 'string' },
  ak: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
} as const;

async function openFromOptions(values: { data?: string; database?: string }): Promise<FleetService> {
  if (values.database === undefined && values.data === undefined) throw new UsageError('give --data DIR or --database URL');
  const db = values.database !== undefined ? openPostgres(values.database) : await openPglite(join(values.data ?? '', 'pglite'));
  return FleetService.open(await openRepository(db));
}

/** The `fleet` verb. */
export default async function fleet(argv: string[]): Promise<number> {
  const { values, positionals } = parseVerbArgs(argv, OPTIONS, true);
  const [action, id] = positionals;
  if (action === 'approve' || action === 'refuse') {
    if (id === undefined) throw new UsageError(`fleet ${action} needs a device ID`);
    const service = await openFromOptions(values);
    try {
      const akPublic = action === 'approve' ? new Uint8Array(await readFile(requireOptions(values, ['ak']).ak)) : undefined;
      const device = await service.enroll(id, akPublic === undefined ? { enrollment: 'refused' } : { enrollment: 'approved', akPublic });
      process.stdout.write(`${device.id}: ${device.enrollment}\n`);
    } finally {
      await service.repository.close();
    }
    return 0;
  }
  if (action !== undefined) throw new UsageError(`unknown fleet action '${action}'`);
  const { data, listen } = requireOptions(values, ['data', 'listen']);
  const address = listenAddress({ ...values, listen }, data);
  const stop = interruptSignal();
  try {
    const running = await startFleet({ data, listen: address, ...(values.database === undefined ? {} : { database: values.database }) });
    process.stdout.write(`imakeep fleet: ${running.address}\n${running.service.publicKeyPem}`);
    await stop.interrupted;
    await running.close();
  } finally {
    stop.dispose();
  }
  return 0;
}
