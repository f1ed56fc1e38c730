/**
 * A device's log as the fleet holds it, read through the same `LogStore` shape the device's own
 * store has, so `/v1/devices/{id}/log` serves it with the device API's log streams (`serve`'s
 * `openLog`): the same kernel formats, banks and byte order, chunk by chunk.
 */
import type { LogStore } from '../serve/index.js';
import { chunkHash, decodeBootRecord, decodeChunk, StoreError, type BootRecord, type StoredChunk } from '../store/index.js';
import type { FleetRepository } from './repository.js';

/** The stored log of `deviceId` (boots read once: a push adding a boot later is not seen by this reader). */
export async function deviceLogStore(repository: FleetRepository, deviceId: string): Promise<LogStore> {
  const boots = new Map<number, BootRecord>();
  for (const { boot, info } of await repository.boots(deviceId)) boots.set(boot, decodeBootRecord(info, `boot ${boot} of device ${deviceId}`));
  const record = (boot: number): BootRecord => {
    const found = boots.get(boot);
    if (found === undefined) throw new StoreError('STORE_NOT_FOUND', `the fleet holds no boot ${boot} of device ${deviceId}`, { boot });
    return found;
  };
  return {
    currentBoot: [...boots.keys()].at(-1),
    bootRecord: async (boot) => record(boot),
    storedCount: (boot) => repository.storedCount(deviceId, boot),
    async *chunks(boot: number, fromIndex = 0): AsyncGenerator<StoredChunk> {
      record(boot);
      for await (const row of repository.chunks(deviceId, boot, fromIndex)) {
        const key = `device ${deviceId} chunk ${boot}/${row.firstIndex}`;
        yield { key, chunk: decodeChunk(row.value, key), value: row.value, hash: chunkHash(row.value) };
      }
    },
  };
}
