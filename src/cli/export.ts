/**
 * `imakeep export`: writes the evidence bundle from a cursor to a file and prints the next cursor,
 * for a device that syncs by carrying files. The file is written whole or not at all (written to
 * a temporary name, synced, renamed), so a cut never leaves half a bundle; run again with the
 * printed cursor to continue. While `imakeep run` holds the store, the bundle comes from its socket.
 *
 *   imakeep export --store DIR [--since CURSOR] --out FILE [--max-bytes N] [--socket PATH]
 */
import { open, rename, rm } from 'node:fs/promises';
import { daemonGet, daemonPaths } from '../daemon/index.js';
import { buildBundle, DEFAULT_BUNDLE_LIMITS, formatCursor, parseCursor } from '../serve/index.js';
import { openStore, StoreError } from '../store/index.js';
import { integerOption, parseVerbArgs, requireOptions, writeStdout } from './_verb.js';

/** Usage of `imakeep export`. */
export const usage = `usage: imakeep export --store DIR [--since CURSOR] --out FILE [--max-bytes N] [--socket PATH]
Prints: <next cursor> <full|caught-up>. CURSOR is <boot>.<index>.<checkpoint>; default: the oldest boot's start.`;

/** A bundle and its next cursor, built from the store, or fetched from the running daemon. */
async function bundleFrom(storeDir: string, since: string | undefined, maxBytes: number, socket: string | undefined): Promise<{ bytes: Uint8Array; next: string; full: boolean }> {
  let store;
  try {
    store = await openStore(storeDir);
  } catch (e) {
    if (!(e instanceof StoreError && e.code === 'STORE_LOCKED')) throw e;
    const query = new URLSearchParams({ max_bytes: String(maxBytes), ...(since === undefined ? {} : { since }) });
    const res = await daemonGet(socket ?? daemonPaths(storeDir).socket, `/v1/evidence?${query.toString()}`);
    const parts: Buffer[] = [];
    for await (const part of res) parts.push(Buffer.isBuffer(part) ? part : Buffer.from(String(part)));
    return { bytes: Buffer.concat(parts), next: String(res.headers['x-imakeep-next-cursor']), full: res.headers['x-imakeep-bundle-full'] === '1' };
  }
  try {
    const built = await buildBundle(store, since === undefined ? undefined : parseCursor(since), { maxBytes });
    return { bytes: built.bytes, next: formatCursor(built.bundle.next), full: built.full };
  } finally {
    await store.close();
  }
}

/** Writes `bytes` to `path` atomically: temp file, fsync, rename. */
async function writeWhole(path: string, bytes: Uint8Array): Promise<void> {
  const temp = `${path}.partial`;
  const file = await open(temp, 'w', 0o640);
  try {
    await file.writeFile(bytes);
    await file.sync();
  } catch (e) {
    await file.close();
    await rm(temp, { force: true });
    throw e;
  }
  await file.close();
  await rename(temp, path);
}

/** The `export` verb: one bundle to `--out`, the next cursor on stdout. */
export default async function exportVerb(argv: string[]): Promise<number> {
  const { values } = parseVerbArgs(
    argv,
    { store: { type: 'string' }, since: { type: 'string' }, out: { type: 'string' }, 'max-bytes': { type: 'string' }, socket: { type: 'string' } },
    false,
  );
  const { store, out, since, socket } = requireOptions(values, ['store', 'out']);
  const maxBytes = integerOption('max-bytes', values['max-bytes'], 1) ?? DEFAULT_BUNDLE_LIMITS.maxBytes;
  if (since !== undefined) parseCursor(since);
  const bundle = await bundleFrom(store, since, maxBytes, socket);
  await writeWhole(out, bundle.bytes);
  await writeStdout(`${bundle.next} ${bundle.full ? 'full' : 'caught-up'}\n`);
  return 0;
}
