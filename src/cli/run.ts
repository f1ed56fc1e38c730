/**
 * `imakeep run`: the collector daemon. Runs the cycle (drain, chunk, quote, match, remove) until
 * SIGINT/SIGTERM and serves the HTTP API on a unix socket in the store directory (LevelDB admits
 * one process: `imakeep log` and `imakeep status` reach the store through it while it runs).
 *
 *   imakeep run --securityfs DIR --tpm ADDR --store DIR [--flavor auto|n|staged|none]
 *               [--interval MS] [--socket PATH] [--banks sha1,sha256] [--cycle-at-records N]
 *               [--chunk-bytes N] [--boot-id-file PATH] [--cmdline-file PATH] [--device-id ID] [--once]
 *               [--keylime [--payload-key PATH]] [--listen HOST:PORT [--tls-cert PEM --tls-key PEM --tls-client-ca PEM]]
 *               [--fleet URL [--fleet-ca PEM] [--fleet-id ID] [--fleet-interval MS] [--fleet-retain MS] [--fleet-retry-max MS]]
 *
 * One line per cycle and per fleet sync round on stdout. Test seam: IMAKEEP_TEST_CRASH_AT (src/testing/crash.ts).
 */
import { COLLECTOR_DEFAULTS, type CollectorHooks, type FlavorChoice } from '../collector/index.js';
import { join } from 'node:path';
import { DEFAULT_BACKOFF, daemonPaths, missingDaemonEnv, startDaemon, type DaemonApiOptions, type DaemonFleetOptions } from '../daemon/index.js';
import { readFileSync } from 'node:fs';
import { UsageError } from '../errors.js';
import { openPayloadKey } from '../serve/index.js';
import { banksOption, choiceOption, deviceIdOption, integerOption, interruptSignal, parseVerbArgs, requireOptions, type CliVerb } from './_verb.js';

/** Usage of `imakeep run`. */
export const usage = `usage: imakeep run --securityfs DIR --tpm ADDR --store DIR [--flavor auto|n|staged|none]
                   [--interval MS] [--socket PATH] [--banks sha1,sha256] [--cycle-at-records N]
                   [--chunk-bytes N] [--boot-id-file PATH] [--cmdline-file PATH] [--device-id ID] [--once]
                   [--keylime [--payload-key PATH]] [--listen HOST:PORT [--tls-cert PEM --tls-key PEM --tls-client-ca PEM]]
                   [--fleet URL [--fleet-ca PEM] [--fleet-id ID] [--fleet-interval MS] [--fleet-retain MS] [--fleet-retry-max MS]]
--fleet: sync evidence to an imakeep fleet (http:// on loopback, else https:// trusting --fleet-ca):
enroll on first contact (EK certificate, credential activation; the bearer token is kept in
STORE/fleet-credentials.json), push from the last acknowledged cursor every --fleet-interval
(default 60000), back off while it is down, drop finished boots it acknowledged whole once
--fleet-retain ms old (default 0); retries wait 1 s doubling up to --fleet-retry-max (default
300000), jittered. --fleet-id: the device's id at the fleet (default the host name).
--keylime: serve the Keylime agent's routes (RSA AK, payload key bound in PCR 16; the key is made
once in --payload-key, default STORE/keylime-payload-key.pem). --listen: the API also on TCP, HTTPS
requiring client certificates signed by --tls-client-ca (the verifier's CA), or plain HTTP on a
loopback address without the three --tls-* options. --device-id (default /etc/machine-id, as for
imakeep enroll request): the id every checkpoint binds, set once in a store.`;

const FLAVORS: readonly FlavorChoice[] = ['auto', 'n', 'staged', 'none'];

/** The hooks of the crash-test seam when `IMAKEEP_TEST_CRASH_AT` is set (loaded only then). */
async function crashHook(): Promise<CollectorHooks | undefined> {
  const value = process.env.IMAKEEP_TEST_CRASH_AT;
  return value === undefined ? undefined : (await import('../testing/crash.js')).crashHook(value);
}

/** `--listen HOST:PORT` with its TLS files (all three or none), or undefined. */
function listenOption(values: { listen?: string; 'tls-cert'?: string; 'tls-key'?: string; 'tls-client-ca'?: string }): DaemonApiOptions['listen'] {
  const files = [values['tls-cert'], values['tls-key'], values['tls-client-ca']];
  if (values.listen === undefined) {
    if (files.some((f) => f !== undefined)) throw new UsageError('--tls-cert, --tls-key and --tls-client-ca need --listen');
    return undefined;
  }
  const m = /^(.+):(\d{1,5})$/.exec(values.listen);
  const host = m?.[1]?.replace(/^\[(.*)\]$/, '$1');
  const port = Number(m?.[2]);
  if (host === undefined || !(port <= 65535)) throw new UsageError(`--listen must be HOST:PORT, not '${values.listen}'`);
  const [cert, key, ca] = files;
  if (cert === undefined && key === undefined && ca === undefined) return { host, port };
  if (cert === undefined || key === undefined || ca === undefined) throw new UsageError('--tls-cert, --tls-key and --tls-client-ca go together');
  return { host, port, tls: { cert, key, ca } };
}

/** `--fleet URL` and its options, or undefined. */
function fleetOption(values: {
  fleet?: string;
  'fleet-ca'?: string;
  'fleet-id'?: string;
  'fleet-interval'?: string;
  'fleet-retain'?: string;
  'fleet-retry-max'?: string;
}): DaemonFleetOptions | undefined {
  const url = values.fleet;
  if (url === undefined) {
    if ([values['fleet-ca'], values['fleet-id'], values['fleet-interval'], values['fleet-retain'], values['fleet-retry-max']].some((v) => v !== undefined)) {
      throw new UsageError('--fleet-* options need --fleet URL');
    }
    return undefined;
  }
  if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol)) throw new UsageError(`--fleet must be an http:// or https:// URL, not '${url}'`);
  const interval = integerOption('fleet-interval', values['fleet-interval'], 1);
  const retain = integerOption('fleet-retain', values['fleet-retain'], 0);
  const retryMax = integerOption('fleet-retry-max', values['fleet-retry-max'], 1);
  return {
    url: url.replace(/\/+$/, ''),
    ...(values['fleet-ca'] === undefined ? {} : { ca: readFileSync(values['fleet-ca'], 'utf8') }),
    ...(values['fleet-id'] === undefined ? {} : { deviceId: values['fleet-id'] }),
    ...(interval === undefined ? {} : { intervalMs: interval }),
    ...(retain === undefined ? {} : { retainMs: retain }),
    ...(retryMax === undefined ? {} : { backoff: { ...DEFAULT_BACKOFF, initialMs: Math.min(DEFAULT_BACKOFF.initialMs, retryMax), maxMs: retryMax } }),
  };
}

const run: CliVerb = async (argv) => {
  const { values } = parseVerbArgs(
    argv,
    {
      securityfs: { type: 'string' },
      tpm: { type: 'string' },
      store: { type: 'string' },
      flavor: { type: 'string' },
      flavour: { type: 'string' },
      interval: { type: 'string' },
      socket: { type: 'string' },
      banks: { type: 'string' },
      'cycle-at-records': { type: 'string' },
      'chunk-bytes': { type: 'string' },
      'boot-id-file': { type: 'string' },
      'cmdline-file': { type: 'string' },
      'device-id': { type: 'string' },
      once: { type: 'boolean' },
      keylime: { type: 'boolean' },
      'payload-key': { type: 'string' },
      listen: { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-client-ca': { type: 'string' },
      fleet: { type: 'string' },
      'fleet-ca': { type: 'string' },
      'fleet-id': { type: 'string' },
      'fleet-interval': { type: 'string' },
      'fleet-retain': { type: 'string' },
      'fleet-retry-max': { type: 'string' },
    },
    false,
  );
  const { tpm: tpmAddress, store: storeDir } = requireOptions(values, ['tpm', 'store']);
  const flavor = choiceOption('flavor', values.flavor ?? values.flavour ?? 'auto', FLAVORS);
  const chunkBytes = integerOption('chunk-bytes', values['chunk-bytes'], 1);
  const unset = missingDaemonEnv();
  // glibc reads these at process start only: say so once rather than re-exec (a parent left
  // behind would outlive a SIGKILL of the child's supervisor and confuse the crash tests).
  if (unset.length > 0) process.stderr.write(`imakeep run: note: started without ${unset.join(' ')}: its anonymous memory can then grow with the log (README, "Running the daemon")\n`);
  const listen = listenOption(values);
  const fleet = fleetOption(values);
  if (values['payload-key'] !== undefined && values.keylime !== true) throw new UsageError('--payload-key needs --keylime');
  const keylime = values.keylime === true ? { payloadKey: openPayloadKey(values['payload-key'] ?? join(storeDir, 'keylime-payload-key.pem')) } : undefined;
  const stop = interruptSignal();
  try {
    const daemon = await startDaemon({
      storeDir,
      tpm: tpmAddress,
      collector: {
        securityfsRoot: values.securityfs,
        cmdlinePath: values['cmdline-file'],
        bootIdPath: values['boot-id-file'],
        deviceId: deviceIdOption(values['device-id']),
        flavor,
        banks: banksOption('banks', values.banks),
        intervalMs: integerOption('interval', values.interval, 1),
        cycleAtRecords: integerOption('cycle-at-records', values['cycle-at-records'], 1),
        chunkBounds: chunkBytes === undefined ? undefined : { ...COLLECTOR_DEFAULTS.chunkBounds, maxBytes: chunkBytes },
        hooks: await crashHook(),
      },
      api: { socket: values.socket ?? daemonPaths(storeDir).socket, ...(listen === undefined ? {} : { listen }) },
      ...(keylime === undefined ? {} : { keylime }),
      ...(fleet === undefined ? {} : { fleet }),
      onSync: (round, error) => {
        const what =
          round === undefined
            ? `failed: ${error instanceof Error ? `${'code' in error ? `${String(error.code)}: ` : ''}${error.message}` : String(error)}`
            : `acknowledged ${round.records} records in ${round.bundles} bundles, verified up to ${round.cursor || '-'}${round.dropped.length > 0 ? `, dropped boots ${round.dropped.join(',')}` : ''}${round.freshAt === null ? '' : `, fresh at ${round.freshAt}`}`;
        process.stdout.write(`fleet: ${what}\n`);
      },
      cycles: values.once === true ? 'manual' : 'scheduled',
      signal: stop.signal,
      onCycle: (report, error, s) => {
        const what = report === undefined ? `failed: ${s.condition?.code ?? 'ERROR'}: ${s.condition?.message ?? String(error)}` : `drained ${report.drained} stored ${report.stored} checkpoint ${report.checkpoint ?? '-'} removed +${report.removed}`;
        process.stdout.write(`cycle ${s.metrics.cycles}: boot ${s.boot} T=${s.removed} kernel ${s.kernelRecords} ${what}\n`);
      },
    });
    const s0 = daemon.collector.status();
    process.stdout.write(`imakeep run: boot ${s0.boot} (${s0.kernelBootId}), flavour ${s0.flavor} (${s0.flavorReason}), T=${s0.removed}, stored ${s0.stored}, serving ${daemon.server.address}${daemon.tcp === undefined ? '' : ` and ${daemon.tcp.address}`}\n`);
    if (values.once === true) {
      try {
        await daemon.cycle();
      } finally {
        await daemon.stop();
      }
    }
    await daemon.stopped;
    return 0;
  } finally {
    stop.dispose();
  }
};

export default run;
