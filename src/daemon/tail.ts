/**
 * The collector's kernel tail as the API server reads it (`KernelTail` of src/serve): the records
 * of the current boot still only in the kernel, read between cycles. The daemon is where the two
 * meet, since serve and collector do not import each other.
 */
import type { Collector } from '../collector/index.js';
import type { KernelTail } from '../serve/index.js';

/** `collector`'s kernel tail, for `startApiServer` (and `openLog`) over the collector's store. */
export function collectorTail(collector: Collector): KernelTail {
  return {
    get boot() {
      return collector.boot;
    },
    end: async () => collector.kernelEnd(),
    records: (from) => collector.tailBatches(from),
  };
}
