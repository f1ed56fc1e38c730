/**
 * Example: a device that is offline for weeks keeps writing evidence bundles to a spool directory,
 * and a sync client uploads them when the network returns, resuming after any cut
 * (docs/api.md#evidence-bundle). Three parts, each a few lines over the library:
 *
 * - `spoolBundles`: on the device, bundles from the last spooled cursor until caught up, each file
 *   written whole (temp + fsync + rename) and named by its sequence number, the next cursor kept
 *   in `spool/cursor`.
 * - `startReceiver`: the verifier's side (loopback only here): `PUT /bundles/<seq>` verifies the
 *   bundle in order with a stateful `EvidenceVerifier` and acknowledges it; a body cut short is
 *   refused and not acknowledged.
 * - `syncSpool`: uploads spooled files in order, deleting each once acknowledged, and marks the
 *   store's export cursor (which retention needs before it may drop a boot). A cut stops it; the
 *   next run starts again with the same file.
 *
 *   node dist/examples/offline-sync.js --store DIR --spool DIR --receiver http://127.0.0.1:PORT
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:http';
import type { KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { buildBundle, decodeBundle, formatCursor, parseCursor, type BundleLimits } from '../src/serve/index.js';
import { openStore, type ImaStore } from '../src/store/index.js';
import { EvidenceVerifier, VerifyError, type BundleReport } from '../src/verify/index.js';

const CURSOR_FILE = 'cursor';

async function writeWhole(path: string, bytes: Uint8Array): Promise<void> {
  const temp = `${path}.partial`;
  const file = await open(temp, 'w');
  try {
    await file.writeFile(bytes);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(temp, path);
}

/** Spooled bundle files, oldest first. */
export function spooled(spool: string): string[] {
  return readdirSync(spool)
    .filter((f) => /^\d{8}\.cbor$/.test(f))
    .sort();
}

/** Device side: writes bundles from the last spooled cursor until caught up; returns how many. */
export async function spoolBundles(store: ImaStore, spool: string, limits: BundleLimits = { maxBytes: 256 * 1024 }): Promise<number> {
  mkdirSync(spool, { recursive: true });
  const cursorPath = join(spool, CURSOR_FILE);
  let cursor = await readFile(cursorPath, 'utf8').then((t) => parseCursor(t.trim()), () => undefined);
  let seq = Number(spooled(spool).at(-1)?.slice(0, 8) ?? '0');
  let written = 0;
  for (;;) {
    const built = await buildBundle(store, cursor, limits);
    const empty = built.bundle.segments.every((s) => s.chunks.length === 0 && s.checkpoints.length === 0);
    if (cursor !== undefined && empty && formatCursor(built.bundle.next) === formatCursor(cursor)) return written;
    await writeWhole(join(spool, `${String(++seq).padStart(8, '0')}.cbor`), built.bytes);
    written++;
    cursor = built.bundle.next;
    await writeWhole(cursorPath, new TextEncoder().encode(`${formatCursor(cursor)}\n`));
    if (!built.full) return written;
  }
}

/** The receiving verifier. */
export interface Receiver {
  readonly url: string;
  /** Reports of the bundles accepted, in order. */
  readonly accepted: BundleReport[];
  close(): Promise<void>;
}

/** Verifier side: accepts bundles in order over HTTP on loopback, verifying each before acknowledging. */
export async function startReceiver(trustedAk: KeyObject): Promise<Receiver> {
  const verifier = new EvidenceVerifier({ trustedAk });
  const accepted: BundleReport[] = [];
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('error', () => undefined);
    req.on('end', () => {
      const length = Number(req.headers['content-length']);
      const body = Buffer.concat(parts);
      if (req.method !== 'PUT' || body.length !== length) {
        res.writeHead(400).end();
        return;
      }
      try {
        accepted.push(verifier.verify(body));
        res.writeHead(200, { 'Content-Type': 'text/plain' }).end(accepted.at(-1)?.next ?? '');
      } catch (e) {
        res.writeHead(e instanceof VerifyError ? 422 : 500, { 'Content-Type': 'text/plain' }).end(e instanceof Error ? e.message : String(e));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    accepted,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Uploads one file; resolves with the HTTP status, or 0 when the connection was cut. */
function upload(url: string, name: string, body: Buffer, cutAfter: number | undefined): Promise<number> {
  return new Promise((resolve) => {
    const req = request(`${url}/bundles/${name}`, { method: 'PUT', headers: { 'Content-Length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    if (cutAfter === undefined || cutAfter >= body.length) {
      req.end(body);
      return;
    }
    // The network goes away mid-upload.
    req.write(body.subarray(0, cutAfter), () => req.destroy());
  });
}

/**
 * Records in the store what an acknowledged bundle delivered: boots it finished, whole; the boot
 * it ends in, up to its next cursor. Retention (`dropBoot`) refuses boots not acknowledged so.
 */
async function markAcknowledged(store: ImaStore, body: Uint8Array): Promise<void> {
  const { segments, next } = decodeBundle(body);
  for (const { boot } of segments) {
    const upTo = boot < next.boot ? await store.storedCount(boot) : next.index;
    if (upTo > ((await store.bootRecord(boot)).exported?.cursor ?? 0)) await store.markExported(boot, upTo);
  }
}

/** Options of {@link syncSpool}. */
export interface SyncOptions {
  /** The device's store, to record what the receiver acknowledged (`markExported`). */
  readonly store?: ImaStore;
  /** Test seam: cut the upload of the n-th file (0-based) after this many bytes. */
  readonly cut?: { readonly file: number; readonly afterBytes: number };
}

/** Uploads spooled bundles in order until one is not acknowledged; returns how many were. */
export async function syncSpool(spool: string, receiverUrl: string, options: SyncOptions = {}): Promise<number> {
  let done = 0;
  for (const [i, name] of spooled(spool).entries()) {
    const path = join(spool, name);
    const body = readFileSync(path);
    const status = await upload(receiverUrl, name, body, options.cut?.file === i ? options.cut.afterBytes : undefined);
    if (status !== 200) return done;
    if (options.store !== undefined) await markAcknowledged(options.store, body);
    await rm(path);
    done++;
  }
  return done;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { store: { type: 'string' }, spool: { type: 'string' }, receiver: { type: 'string' } } });
  if (values.store === undefined || values.spool === undefined) throw new Error('usage: offline-sync --store DIR --spool DIR [--receiver URL]');
  const store = await openStore(values.store);
  try {
    const written = await spoolBundles(store, values.spool);
    process.stdout.write(`spooled ${written} bundles\n`);
    if (values.receiver !== undefined) process.stdout.write(`uploaded ${await syncSpool(values.spool, values.receiver, { store })} bundles\n`);
  } finally {
    await store.close();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();

