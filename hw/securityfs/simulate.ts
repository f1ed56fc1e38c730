/**
 * A running simulation: the emulator mounted, records fed from a capture or the synthetic workload
 * at a set rate, until aborted. The loop of `npm run sim` (hw/sim.ts).
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { BankName, ImaRecord } from '../../src/ima/index.js';
import { openTpmTransport, SwtpmTcpTransport, Tpm } from '../../src/tpm/index.js';
import { startTpmProxy, type TpmProxy } from '../tpm-proxy.js';
import { startSecurityfsEmulator, type SecurityfsEmulator } from './emulator.js';
import { captureForTpm, readCapture, tpmBootAggregate } from './sources.js';
import { ImaWorkload } from '../../src/testing/index.js';

/** Options of {@link runSimulation}. */
export interface SimulationOptions {
  readonly mountDir: string;
  /**
   * TPM address; without it records are logged, never extended. A `swtpm:HOST:PORT` is shared
   * through the TPM proxy (hw/tpm-proxy.ts), whose addresses are printed for `imakeep run` and
   * tpm2-tools: swtpm itself serves one connection at a time.
   */
  readonly tpm?: string;
  /** `synthetic` (default) or the path of a captured SHA-1 binary list. */
  readonly source?: string;
  /** Records per second; 0 = as fast as possible. Default 10. */
  readonly rate?: number;
  /** Records to append in all (default: unbounded for synthetic, the whole capture once). */
  readonly count?: number;
  readonly banks?: readonly BankName[];
  readonly flushHtable?: boolean;
  readonly staging?: boolean;
  /** Seed of the synthetic workload (default 1). */
  readonly seed?: number;
}

/** Feeds records until `count` or abort; what the caller prints comes through `log`. */
export async function runSimulation(opts: SimulationOptions, signal: AbortSignal, log: (line: string) => void): Promise<void> {
  const transport = opts.tpm === undefined ? undefined : openTpmTransport(opts.tpm);
  let proxy: TpmProxy | undefined;
  let tpm: Tpm | undefined;
  let emu: SecurityfsEmulator | undefined;
  try {
    if (transport instanceof SwtpmTcpTransport) proxy = await startTpmProxy(transport.host, transport.port);
    tpm = proxy === undefined ? (transport === undefined ? undefined : new Tpm(transport)) : Tpm.open(proxy.address);
    emu = await startSecurityfsEmulator({
      mountDir: opts.mountDir,
      tpm,
      banks: opts.banks,
      flushHtable: opts.flushHtable,
      staging: opts.staging,
    });
    log(`securityfs root   ${emu.securityfsRoot}`);
    log(`IMA directory     ${emu.imaDir}`);
    log(`control directory ${emu.control.dir}`);
    log(`TPM               ${opts.tpm ?? 'none (records are not extended)'}${tpm ? ` banks ${emu.tpmBanks.join(',')}` : ''}`);
    if (proxy !== undefined) {
      log(`shared TPM        --tpm ${proxy.address}   (imakeep run, imakeep tpm)`);
      log(`tpm2-tools        -T ${proxy.tcti}   (or TPM2TOOLS_TCTI)`);
      log(`try               node dist/src/cli.js run --securityfs ${emu.securityfsRoot} --tpm ${proxy.address} --store /tmp/imakeep-store`);
      log(`                  tpm2_pcrread -T ${proxy.tcti} sha256:10`);
    }
    const source = await recordSource(opts, tpm);
    const rate = opts.rate ?? 10;
    const t0 = Date.now();
    let appended = 0;
    while (!signal.aborted && appended < source.count) {
      const due = rate > 0 ? Math.min(source.count, Math.floor(((Date.now() - t0) / 1000) * rate)) - appended : 512;
      if (due <= 0) {
        await delay(Math.min(1000, Math.max(10, 1000 / rate)), undefined, { signal }).catch(() => undefined);
        continue;
      }
      const batch = source.take(Math.min(due, 512, source.count - appended));
      await emu.append(batch);
      appended += batch.length;
      if (appended % 1000 < batch.length) log(`appended ${appended}`);
    }
    if (!signal.aborted) {
      log(`appended ${appended}; running until SIGINT/SIGTERM`);
      await untilAborted(signal);
    }
    log(`stopping after ${appended} records`);
  } finally {
    await emu?.stop();
    await tpm?.close();
    await proxy?.close();
  }
}

/** Resolves on abort. A pending promise does not keep Node running: a timer does, until then. */
function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const keepAlive = setInterval(() => undefined, 60_000);
    signal.addEventListener(
      'abort',
      () => {
        clearInterval(keepAlive);
        resolve();
      },
      { once: true },
    );
  });
}

interface RecordSource {
  readonly count: number;
  take(n: number): ImaRecord[];
}

async function recordSource(opts: SimulationOptions, tpm: Tpm | undefined): Promise<RecordSource> {
  if (opts.source !== undefined && opts.source !== 'synthetic') {
    const all = tpm === undefined ? readCapture(opts.source) : await captureForTpm(opts.source, tpm);
    let at = 0;
    return {
      count: Math.min(opts.count ?? all.length, all.length),
      take(n) {
        const out = all.slice(at, at + n);
        at += out.length;
        return out;
      },
    };
  }
  const workload = new ImaWorkload({
    seed: opts.seed ?? 1,
    template: 'mixed',
    violationRate: 0.005,
    bootAggregate: tpm === undefined ? undefined : await tpmBootAggregate(tpm, 'sha256'),
  });
  return { count: opts.count ?? Number.POSITIVE_INFINITY, take: (n) => [...workload.records(n)] };
}
