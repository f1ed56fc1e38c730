/**
 * `imakeep fleet`: the service devices sync their evidence to (src/fleet), on the embedded PGlite
 * under --data or on a PostgreSQL server shared by several fleet processes.
 *
 *   imakeep fleet --data DIR --listen HOST:PORT [--database postgres://…] [--ca DIR [--approval auto|manual]]
 *                 [--tls-cert F --tls-key F [--tls-ca F]] [--operator-token-file F]
 *   imakeep fleet approve ID [--ak FILE] [--data DIR | --database URL]   (operator: approve, or pre-approve)
 *   imakeep fleet refuse ID [--data DIR | --database URL]
 */
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../errors.js';
import { FleetService, openPglite, openPostgres, openRepository, startFleet, type FleetApproval } from '../fleet/index.js';
import type { BindAddress } from '../serve/index.js';
import { choiceOption, interruptSignal, parseVerbArgs, requireOptions } from './_verb.js';
import { listenAddress } from './serve.js';

/** Usage of `imakeep fleet`. */
export const usage = `usage: imakeep fleet --data DIR --listen HOST:PORT [--database postgres://USER@HOST:PORT/DB]
                     [--ca DIR [--approval auto|manual]] [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]
                     [--operator-token-file FILE]
       imakeep fleet approve ID [--ak FILE] [--data DIR | --database URL]
       imakeep fleet refuse ID [--data DIR | --database URL]
Stores evidence in PGlite under DIR/pglite unless --database names a PostgreSQL server (several
fleet processes may share one). --ca: devices enroll themselves (imakeep run --fleet URL) when
their EK certificate chains to a CA certificate in DIR; --approval manual keeps them pending until
approved. Off loopback the fleet needs TLS (--tls-cert/--tls-key; --tls-ca also requires client
certificates); devices present the bearer token of their enrollment, the operator the token in
--operator-token-file. approve: from then on (pre-approves a device not enrolled yet); with --ak,
enrolls that AK (a TPM2B_PUBLIC file, tpm2_createak -u) without the exchange. approve and refuse
open the database: with PGlite, while the fleet is stopped (else POST /v1/devices/ID/approval).
Prints its address and the fleet public key (PEM, also at GET /v1/key) for \`imakeep verify --from-token\`.`;

const APPROVALS: readonly FleetApproval[] = ['auto', 'manual'];

const OPTIONS = {
  data: { type: 'string' },
  database: { type: 'string' },
  listen: { type: 'string' },
  ak: { type: 'string' },
  ca: { type: 'string' },
  approval: { type: 'string' },
  'operator-token-file': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
} as const;

async function openFromOptions(values: { data?: string; database?: string }): Promise<FleetService> {
  if (values.database === undefined && values.data === undefined) throw new UsageError('give --data DIR or --database URL');
  const db = values.database !== undefined ? openPostgres(values.database) : await openPglite(join(values.data ?? '', 'pglite'));
  return FleetService.open(await openRepository(db));
}

/** `--listen HOST:PORT` with TLS (certificate and key, optionally the CA of client certificates). */
function fleetAddress(values: { 'tls-cert'?: string; 'tls-key'?: string; 'tls-ca'?: string }, listen: string, data: string): BindAddress {
  const address = listenAddress({ listen }, data);
  if (!('host' in address)) throw new UsageError('--listen must be HOST:PORT');
  const { 'tls-cert': cert, 'tls-key': key, 'tls-ca': ca } = values;
  if (cert === undefined && key === undefined) {
    if (ca !== undefined) throw new UsageError('--tls-ca needs --tls-cert and --tls-key');
    return address;
  }
  if (cert === undefined || key === undefined) throw new UsageError('--tls-cert and --tls-key go together');
  return { ...address, tls: { cert, key, ...(ca === undefined ? {} : { ca }) } };
}

/** The `fleet` verb. */
export default async function fleet(argv: string[]): Promise<number> {
  const { values, positionals } = parseVerbArgs(argv, OPTIONS, true);
  const [action, id] = positionals;
  if (action === 'approve' || action === 'refuse') {
    if (id === undefined) throw new UsageError(`fleet ${action} needs a device ID`);
    const service = await openFromOptions(values);
    try {
      const akPublic = action === 'approve' && values.ak !== undefined ? new Uint8Array(await readFile(values.ak)) : undefined;
      const device =
        akPublic === undefined ? await service.enrollments.decide(id, action === 'approve' ? 'approved' : 'refused') : await service.enroll(id, { enrollment: 'approved', akPublic });
      process.stdout.write(`${device.id}: ${device.enrollment}\n`);
    } finally {
      await service.repository.close();
    }
    return 0;
  }
  if (action !== undefined) throw new UsageError(`unknown fleet action '${action}'`);
  const { data, listen } = requireOptions(values, ['data', 'listen']);
  const address = fleetAddress(values, listen, data);
  const approval = values.approval === undefined ? undefined : choiceOption('approval', values.approval, APPROVALS);
  if (approval !== undefined && values.ca === undefined) throw new UsageError('--approval needs --ca (self-enrollment)');
  const operatorToken = values['operator-token-file'] === undefined ? undefined : readFileSync(values['operator-token-file'], 'utf8').trim();
  if (operatorToken !== undefined && operatorToken.length < 16) throw new UsageError('the operator token must be at least 16 characters');
  const stop = interruptSignal();
  try {
    const running = await startFleet({
      data,
      listen: address,
      ...(values.database === undefined ? {} : { database: values.database }),
      ...(values.ca === undefined ? {} : { ca: values.ca }),
      ...(approval === undefined ? {} : { approval }),
      ...(operatorToken === undefined ? {} : { operatorToken }),
    });
    process.stdout.write(`imakeep fleet: ${running.address}\n${running.service.publicKeyPem}`);
    await stop.interrupted;
    await running.close();
  } finally {
    stop.dispose();
  }
  return 0;
}
