/** Fetching every evidence bundle from a server, as a sync client does. */
import assert from 'node:assert/strict';
import { get, type Target } from '../serve/_http.js';

/** A bundle fetched, with the cursor it was asked at. */
export interface Fetched {
  readonly cursor: string | undefined;
  readonly bytes: Buffer;
  readonly next: string;
  readonly full: boolean;
}

/** Bundles from `since` until the server has nothing more (the next cursor stops moving). */
export async function fetchAll(target: Target, since: string | undefined, maxBytes: number): Promise<Fetched[]> {
  const out: Fetched[] = [];
  let cursor = since;
  for (let i = 0; i < 10_000; i++) {
    const reply = await get(target, `/v1/evidence?max_bytes=${maxBytes}${cursor === undefined ? '' : `&since=${cursor}`}`);
    assert.equal(reply.status, 200, reply.body.toString().slice(0, 300));
    const next = String(reply.headers['x-imakeep-next-cursor']);
    out.push({ cursor, bytes: reply.body, next, full: reply.headers['x-imakeep-bundle-full'] === '1' });
    if (next === cursor) return out.slice(0, -1); // nothing new: that bundle was empty
    cursor = next;
  }
  throw new Error('the cursor never stopped moving');
}
