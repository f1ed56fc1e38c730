/**
 * What /proc says about another process: resident memory, CPU time and block-layer writes, read
 * from outside so the measured process needs no instrumentation (proc(5): status, stat, io).
 * Parsers are pure; {@link sampleProcess} is the one reader.
 */
import { readFileSync, realpathSync } from 'node:fs';

/** One reading of a process. Memory in KiB (as /proc prints it), CPU in seconds, I/O in bytes. */
export interface ProcessSample {
  /** VmRSS: resident now. */
  readonly rssKiB: number;
  /** VmHWM: peak resident so far. */
  readonly peakRssKiB: number;
  /** RssAnon: heap, malloc, V8 (the part that grows with what the process holds). */
  readonly anonKiB: number;
  /** RssFile: mapped binaries and files (node itself, LevelDB tables). */
  readonly fileKiB: number;
  /** utime + stime. */
  readonly cpuSeconds: number;
  /** Bytes this process caused to be sent to the block layer (proc(5) `write_bytes`). */
  readonly writeBytes: number;
  /** write(2)-family bytes, cached or not (`wchar`). */
  readonly writtenChars: number;
}

/** The `Key:  value kB` lines of /proc/PID/status as numbers (the unit dropped). */
export function parseProcStatus(text: string): Map<string, number> {
  const fields = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(\w+):\s+(\d+)/.exec(line);
    if (m?.[1] !== undefined) fields.set(m[1], Number(m[2]));
  }
  return fields;
}

/**
 * utime + stime of /proc/PID/stat in clock ticks. The command name (field 2) may hold spaces and
 * parentheses, so fields are counted after its last `)`: utime and stime are fields 14 and 15.
 */
export function parseProcStatTicks(text: string): number {
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): field n is rest[n - 3].
  return Number(rest[14 - 3]) + Number(rest[15 - 3]);
}

/** Clock ticks per second (sysconf(_SC_CLK_TCK)): 100 on every Linux architecture Node runs on. */
export const CLOCK_TICKS_PER_SECOND = 100;

/** Reads status, stat and io of `pid`; undefined once the process is gone. */
export function sampleProcess(pid: number): ProcessSample | undefined {
  try {
    const status = parseProcStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
    const ticks = parseProcStatTicks(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    const io = parseProcStatus(readFileSync(`/proc/${pid}/io`, 'utf8'));
    const kib = (k: string) => status.get(k) ?? Number.NaN;
    return {
      rssKiB: kib('VmRSS'),
      peakRssKiB: kib('VmHWM'),
      anonKiB: kib('RssAnon'),
      fileKiB: kib('RssFile'),
      cpuSeconds: ticks / CLOCK_TICKS_PER_SECOND,
      writeBytes: io.get('write_bytes') ?? Number.NaN,
      writtenChars: io.get('wchar') ?? Number.NaN,
    };
  } catch {
    return undefined;
  }
}

/** The `q` quantile (0..1, nearest rank) of `values`; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}

/**
 * Where a process's resident memory is, from /proc/PID/smaps (proc(5)): each mapping's `Rss` and
 * `Anonymous` summed by what it is. RssAnon of /proc/PID/status is `brkHeap + anonMaps + stacks`
 * plus the anonymous (copy-on-write) pages of file mappings, counted here in `fileAnonKiB`.
 */
export interface SmapsBreakdown {
  /** `[heap]`: glibc malloc's main arena (brk). */
  readonly brkHeapKiB: number;
  /** Mappings with no name: V8's heap spaces and code, glibc's thread arenas and mmapped blocks, ArrayBuffers above the mmap threshold. */
  readonly anonMapsKiB: number;
  /** `[stack]` and thread stacks glibc names so. */
  readonly stacksKiB: number;
  /** The node executable (V8, libuv, OpenSSL and ICU are linked into it). */
  readonly nodeBinaryKiB: number;
  /** Native addons under `node_modules` (classic-level's LevelDB): the shared objects of our dependencies. */
  readonly addonsKiB: number;
  /** Other shared libraries (`*.so*`: libc, libstdc++...). */
  readonly librariesKiB: number;
  /** Any other mapped file (LevelDB tables, segment files, locale data). */
  readonly otherFilesKiB: number;
  /** Anonymous pages inside file mappings (relocations, .data and .bss written). */
  readonly fileAnonKiB: number;
}

/** Sums /proc/PID/smaps text by {@link SmapsBreakdown}; `nodeBinary` is the executable's real path. */
export function parseSmaps(text: string, nodeBinary: string): SmapsBreakdown {
  const sums = { brkHeapKiB: 0, anonMapsKiB: 0, stacksKiB: 0, nodeBinaryKiB: 0, addonsKiB: 0, librariesKiB: 0, otherFilesKiB: 0, fileAnonKiB: 0 };
  let kind: keyof typeof sums = 'anonMapsKiB';
  for (const line of text.split('\n')) {
    // A mapping's header: `start-end perms offset dev inode [pathname]`.
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header !== null) {
      const path = header[1] ?? '';
      kind =
        path === ''
          ? 'anonMapsKiB'
          : path === '[heap]'
            ? 'brkHeapKiB'
            : path.startsWith('[stack')
              ? 'stacksKiB'
              : path.startsWith('[')
                ? 'otherFilesKiB'
                : path === nodeBinary
                  ? 'nodeBinaryKiB'
                  : path.includes('/node_modules/')
                    ? 'addonsKiB'
                    : /\.so(\.|$)/.test(path)
                      ? 'librariesKiB'
                      : 'otherFilesKiB';
      continue;
    }
    const field = /^(Rss|Anonymous):\s+(\d+) kB/.exec(line);
    if (field === null) continue;
    const kib = Number(field[2]);
    const isFile = kind === 'nodeBinaryKiB' || kind === 'addonsKiB' || kind === 'librariesKiB' || kind === 'otherFilesKiB';
    if (field[1] === 'Rss') {
      if (isFile) sums[kind] += kib;
    } else if (isFile) {
      // A file mapping's Rss (read first) holds its anonymous pages too: RssFile counts only the rest.
      sums[kind] -= kib;
      sums.fileAnonKiB += kib;
    } else sums[kind] += kib;
  }
  return sums;
}

/** {@link parseSmaps} of a running process; undefined once it is gone. */
export function sampleSmaps(pid: number): SmapsBreakdown | undefined {
  try {
    return parseSmaps(readFileSync(`/proc/${pid}/smaps`, 'utf8'), realpathSync(`/proc/${pid}/exe`));
  } catch {
    return undefined;
  }
}
