/**
 * The parts of an emulated device that a bench or the demo starts (swtpm, the TPM proxy, a
 * TPM client, the securityfs emulator, the collector, a work directory), and their shutdown.
 */
import { rmSync } from 'node:fs';
import type { SecurityfsEmulator } from './securityfs/emulator.js';
import type { SwtpmInstance } from './swtpm.js';
import type { Tpm } from '../src/tpm/index.js';
import type { CollectorProcess } from './collector-process.js';
import type { TpmProxy } from './tpm-proxy.js';

/** What a run started so far; filled in start order, so a failed start leaves only what runs. */
export interface DeviceParts {
  swtpm?: SwtpmInstance;
  mux?: TpmProxy;
  tpm?: Tpm;
  emulator?: SecurityfsEmulator;
  collector?: CollectorProcess;
  workDir?: string;
}

/**
 * Stops what `parts` holds in reverse start order (the collector before the emulator it reads,
 * the emulator before the TPM it extends), then removes the work directory. A part that fails to
 * stop is passed to `onError` and the others still stop: a run never leaves a mount or process.
 */
export async function stopDeviceParts(parts: DeviceParts, onError: (part: string, err: unknown) => void): Promise<void> {
  const steps: [string, (() => Promise<unknown>) | undefined][] = [
    ['collector', parts.collector && (() => parts.collector?.stop() ?? Promise.resolve())],
    ['securityfs emulator (unmount)', parts.emulator && (() => parts.emulator?.stop() ?? Promise.resolve())],
    ['TPM client', parts.tpm && (() => parts.tpm?.close() ?? Promise.resolve())],
    ['TPM proxy', parts.mux && (() => parts.mux?.close() ?? Promise.resolve())],
    ['swtpm', parts.swtpm && (() => parts.swtpm?.stop() ?? Promise.resolve())],
  ];
  for (const [name, stop] of steps) {
    if (stop === undefined) continue;
    try {
      await stop();
    } catch (err) {
      onError(name, err);
    }
  }
  if (parts.workDir !== undefined) rmSync(parts.workDir, { recursive: true, force: true });
}
