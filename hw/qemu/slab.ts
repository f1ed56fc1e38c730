/**
 * Slab accounting from `/proc/slabinfo` (format 2.1) and `/proc/meminfo`, for the calibration of
 * kernel memory per IMA record (docs/kernel.md#kernel-memory-per-record). Pure: text in, numbers out.
 */

/** One `/proc/slabinfo` row. */
export interface SlabCache {
  name: string;
  activeObjs: number;
  numObjs: number;
  objSize: number;
  pagesPerSlab: number;
  numSlabs: number;
}

/** One guest snapshot: slabinfo, meminfo and IMA's `runtime_measurements_count`. */
export interface SlabSnapshot {
  caches: ReadonlyMap<string, SlabCache>;
  /** meminfo values in kB (`Slab`, `SUnreclaim`, ...). */
  meminfoKb: ReadonlyMap<string, number>;
  records: number;
}

/** The difference between two snapshots, per IMA record added in between. */
export interface SlabCalibration {
  records: number;
  /** Σ over `kmalloc-*` caches of Δ(active objects × object size), per record. */
  kmallocObjectBytesPerRecord: number;
  /** Σ over `kmalloc-*` caches of Δ(slabs × pages per slab × 4096), per record. */
  kmallocSlabBytesPerRecord: number;
  /** Δ(active objects × object size) of every cache, per record. */
  allCachesObjectBytesPerRecord: number;
  /** Δ meminfo `Slab` (kB × 1024), per record. */
  meminfoSlabBytesPerRecord: number;
  /** Δ meminfo `SUnreclaim` (kB × 1024), per record. */
  meminfoSUnreclaimBytesPerRecord: number;
  /** Caches whose object bytes changed most: name, Δ objects, Δ object bytes per record. */
  topCaches: { name: string; objects: number; bytesPerRecord: number }[];
}

const PAGE_SIZE = 4096;
const TOP_CACHES = 8;

/** Parses `/proc/slabinfo` 2.x: `name active_objs num_objs objsize objperslab pagesperslab : tunables ... : slabdata active_slabs num_slabs sharedavail`. */
export function parseSlabinfo(text: string): Map<string, SlabCache> {
  const caches = new Map<string, SlabCache>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.startsWith('slabinfo')) continue;
    const [head, , slabdata] = line.split(':');
    if (head === undefined || slabdata === undefined) continue;
    const [name, active, num, size, , pages] = head.trim().split(/\s+/);
    const numSlabs = slabdata.trim().split(/\s+/)[2];
    if (name === undefined || pages === undefined || numSlabs === undefined) continue;
    caches.set(name, {
      name,
      activeObjs: Number(active),
      numObjs: Number(num),
      objSize: Number(size),
      pagesPerSlab: Number(pages),
      numSlabs: Number(numSlabs),
    });
  }
  return caches;
}

/** Parses `/proc/meminfo` (`Slab:  12345 kB`) into kB values. */
export function parseMeminfo(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const m of text.matchAll(/^(\w+(?:\(\w+\))?):\s+(\d+)/gm)) {
    if (m[1] !== undefined && m[2] !== undefined) values.set(m[1], Number(m[2]));
  }
  return values;
}

const isKmalloc = (name: string): boolean => /^(dma-)?kmalloc-/.test(name);
const objectBytes = (c: SlabCache | undefined): number => (c === undefined ? 0 : c.activeObjs * c.objSize);
const slabBytes = (c: SlabCache | undefined): number => (c === undefined ? 0 : c.numSlabs * c.pagesPerSlab * PAGE_SIZE);

/** Compares two snapshots taken around a workload that only added IMA records. */
export function calibrateSlab(before: SlabSnapshot, after: SlabSnapshot): SlabCalibration {
  const records = after.records - before.records;
  const per = (bytes: number): number => (records > 0 ? bytes / records : Number.NaN);
  const names = new Set([...before.caches.keys(), ...after.caches.keys()]);
  let kmallocObjects = 0;
  let kmallocSlabs = 0;
  let allObjects = 0;
  const changed: { name: string; objects: number; bytes: number }[] = [];
  for (const name of names) {
    const b = before.caches.get(name);
    const a = after.caches.get(name);
    const dObjects = objectBytes(a) - objectBytes(b);
    allObjects += dObjects;
    if (isKmalloc(name)) {
      kmallocObjects += dObjects;
      kmallocSlabs += slabBytes(a) - slabBytes(b);
    }
    if (dObjects !== 0) changed.push({ name, objects: (a?.activeObjs ?? 0) - (b?.activeObjs ?? 0), bytes: dObjects });
  }
  const kb = (s: SlabSnapshot, key: string): number => s.meminfoKb.get(key) ?? 0;
  changed.sort((x, y) => Math.abs(y.bytes) - Math.abs(x.bytes));
  return {
    records,
    kmallocObjectBytesPerRecord: per(kmallocObjects),
    kmallocSlabBytesPerRecord: per(kmallocSlabs),
    allCachesObjectBytesPerRecord: per(allObjects),
    meminfoSlabBytesPerRecord: per((kb(after, 'Slab') - kb(before, 'Slab')) * 1024),
    meminfoSUnreclaimBytesPerRecord: per((kb(after, 'SUnreclaim') - kb(before, 'SUnreclaim')) * 1024),
    topCaches: changed.slice(0, TOP_CACHES).map((c) => ({ name: c.name, objects: c.objects, bytesPerRecord: per(c.bytes) })),
  };
}
