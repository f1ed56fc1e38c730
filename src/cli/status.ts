/**
 * `imakeep status`: the store's boots (stored, checkpointed, removed, exported) and the collector's
 * state and metrics.
 *
 *   imakeep status --store DIR [--json] [--socket PATH]
 *
 * While `imakeep run` holds the store: its `/v1/status` over the socket, or, if the socket does
 * not answer, its status file (rewritten after every cycle). Otherwise the store itself, with the
 * last status file the daemon left as `collector`.
 */
import { readFileSync } from 'node:fs';
import { daemonGet, daemonPaths } from '../daemon/index.js';
import { bootSummaries } from '../serve/index.js';
import { openStore, StoreError } from '../store/index.js';
import { parseVerbArgs, requireOptions, writeStdout, type CliVerb } from './_verb.js';

/** Usage of `imakeep status`. */
export const usage = 'usage: imakeep status --store DIR [--json] [--socket PATH]';

function readJsonFile(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
}

async function readBody(res: AsyncIterable<Buffer>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of res) parts.push(part);
  return Buffer.concat(parts).toString('utf8');
}

/** The status as the daemon's API shows it, read from the store (no daemon running). */
async function storeStatus(storeDir: string, statusFile: string): Promise<Record<string, unknown>> {
  const store = await openStore(storeDir);
  try {
    const boots = await bootSummaries(store);
    return { source: 'store', currentBoot: store.currentBoot ?? null, boots, collector: readJsonFile(statusFile) };
  } finally {
    await store.close();
  }
}

/** The running daemon's status: its API, else its status file. */
async function daemonStatus(socket: string, statusFile: string): Promise<Record<string, unknown>> {
  try {
    const body: unknown = JSON.parse(await readBody(await daemonGet(socket, '/v1/status')));
    return { source: 'daemon', ...(typeof body === 'object' && body !== null ? body : {}) };
  } catch {
    return { source: 'status-file', collector: readJsonFile(statusFile) };
  }
}

function summary(status: Record<string, unknown>): string {
  const lines = [`source: ${String(status.source)}`];
  const boots = Array.isArray(status.boots) ? status.boots : [];
  for (const b of boots) lines.push(`boot ${JSON.stringify(b)}`);
  const c = status.collector;
  if (typeof c === 'object' && c !== null) {
    const fields = new Map(Object.entries(c));
    const get = (k: string): string => (fields.has(k) ? JSON.stringify(fields.get(k)) : '-');
    lines.push(`collector: flavor ${get('flavor')} T=${get('removed')} stored ${get('stored')} kernel ${get('kernelRecords')} halted ${get('removalHalted')} condition ${get('condition')}`);
  }
  return `${lines.join('\n')}\n`;
}

const status: CliVerb = async (argv) => {
  const { values } = parseVerbArgs(argv, { store: { type: 'string' }, json: { type: 'boolean' }, socket: { type: 'string' } }, false);
  const { store: storeDir } = requireOptions(values, ['store']);
  const paths = daemonPaths(storeDir);
  let result: Record<string, unknown>;
  try {
    result = await storeStatus(storeDir, paths.statusFile);
  } catch (e) {
    if (!(e instanceof StoreError && e.code === 'STORE_LOCKED')) throw e;
    result = await daemonStatus(values.socket ?? paths.socket, paths.statusFile);
  }
  await writeStdout(values.json === true ? `${JSON.stringify(result, null, 2)}\n` : summary(result));
  return 0;
};

export default status;
