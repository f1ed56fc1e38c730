/**
 * Test helpers for the fleet: a fleet on loopback (PGlite in a temp dir, or a given PostgreSQL
 * URL), a device enrolled with its AK, and HTTP calls with bodies.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFleet, type Fleet, type FleetOptions } from '../../src/fleet/index.js';
import { buildBundle, formatCursor, parseCursor, type EvidenceCursor } from '../../src/serve/index.js';
import type { CollectedDevice } from '../serve/_collected.js';

/** A fleet on 127.0.0.1 with a temp data dir removed by `stop`. */
export async function testFleet(options: Partial<FleetOptions> = {}): Promise<{ fleet: Fleet; url: string; data: string; stop(): Promise<void> }> {
  const data = mkdtempSync(join(tmpdir(), 'imakeep-fleet-'));
  const fleet = await startFleet({ data, listen: { host: '127.0.0.1', port: 0 }, ...options });
  return {
    fleet,
    url: fleet.address,
    data,
    async stop() {
      await fleet.close();
      rmSync(data, { recursive: true, force: true });
    },
  };
}

/** A reply read whole. */
export interface FleetReply {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/** The `error` of a reply (code, details). */
export function errorOf(reply: FleetReply): { code: string; details: Record<string, unknown> } {
  const error = reply.body.error as { code: string; details: Record<string, unknown> } | undefined;
  if (error === undefined) throw new Error(`not an error reply: ${JSON.stringify(reply.body).slice(0, 300)}`);
  return error;
}

/** One request; JSON body back. */
export async function call(url: string, path: string, init: { method?: string; body?: Uint8Array | string; type?: string } = {}): Promise<FleetReply> {
  const res = await fetch(`${url}${path}`, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    ...(init.body === undefined ? {} : { body: init.body }),
    headers: init.type === undefined ? {} : { 'content-type': init.type },
  });
  const text = await res.text();
  return { status: res.status, body: text.length === 0 ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

/** POSTs one bundle as `application/cbor`. */
export function pushBundle(url: string, id: string, bytes: Uint8Array): Promise<FleetReply> {
  return call(url, `/v1/devices/${id}/evidence`, { body: bytes, type: 'application/cbor' });
}

/** The device's bundle from `cursor` (text), as its API would export it. */
export async function bundleFrom(device: CollectedDevice, cursor?: string, maxBytes = 1024 * 1024): Promise<{ bytes: Uint8Array; next: string; cursor: EvidenceCursor }> {
  const built = await buildBundle(device.store, cursor === undefined ? undefined : parseCursor(cursor), { maxBytes });
  return { bytes: built.bytes, next: formatCursor(built.bundle.next), cursor: built.bundle.cursor };
}

/** Enrolls `device` as `id`, approved with its AK. */
export async function enrollDevice(fleet: Fleet, id: string, device: CollectedDevice): Promise<void> {
  await fleet.service.enroll(id, { enrollment: 'approved', akPublic: (await device.ak()).public });
}
