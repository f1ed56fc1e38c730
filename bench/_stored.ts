/**
 * A store filled with synthetic records for the serving benches: one boot of `records` workload
 * records (`mixed` templates, 1 % violations) committed in 64 KiB chunks, as the collector seals
 * them. `onRecord` sees each record before it is stored (a bench that also writes the kernel's own
 * file of the same list).
 */
import { PcrReplay, type ImaRecord } from '../src/ima/index.js';
import { ChunkBuilder, type ImaStore } from '../src/store/index.js';
import { ImaWorkload } from '../src/testing/index.js';

export async function fillStore(store: ImaStore, kernelBootId: string, records: number, onRecord?: (record: ImaRecord, index: number) => Promise<void> | void): Promise<void> {
  const boot = await store.beginBoot({
    kernelBootId,
    firstSeen: Date.now(),
    resetCount: 1,
    bankModes: { sha1: 'native', sha256: 'native' },
    endianness: 'le',
    template: 'ima-sig',
    templateHash: 'sha256',
  });
  const workload = new ImaWorkload({ seed: 5, template: 'mixed', violationRate: 0.01 });
  const replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' }, verifyDigests: false });
  let builder = new ChunkBuilder(0);
  for (let i = 0; i < records; i++) {
    const record = workload.next();
    await onRecord?.(record, i);
    builder.add(record, 0);
    replay.extend(record);
    if (builder.shouldSeal(0) || i === records - 1) {
      const draft = builder.draft(replay.toState());
      await store.appendChunk(boot, draft);
      builder = new ChunkBuilder(draft.firstIndex + draft.count);
    }
  }
}
