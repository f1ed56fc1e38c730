/**
 * Writer of the `newc` cpio format the kernel unpacks as an initramfs
 * (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte ASCII header
 * `070701` + 13 eight-digit hex fields, the NUL-terminated name, padding to 4 bytes, the data,
 * padding to 4 bytes; the archive ends with the entry `TRAILER!!!`. Pure: bytes in, bytes out.
 */

/** One archive member. Paths are relative (`bin/busybox`), without a leading slash. */
export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Uint8Array; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const TRAILER = 'TRAILER!!!';

const hex8 = (n: number): string => n.toString(16).padStart(8, '0');
const pad4 = (n: number): Uint8Array => new Uint8Array((4 - (n % 4)) % 4);

function header(fields: { ino: number; mode: number; nlink: number; size: number; rdevMajor: number; rdevMinor: number }, name: string): Uint8Array {
  const nameBytes = new TextEncoder().encode(`${name}\0`);
  const text =
    '070701' +
    [fields.ino, fields.mode, 0, 0, fields.nlink, 0, fields.size, 0, 0, fields.rdevMajor, fields.rdevMinor, nameBytes.length, 0]
      .map(hex8)
      .join('');
  const head = new TextEncoder().encode(text);
  const out = new Uint8Array(head.length + nameBytes.length + pad4(head.length + nameBytes.length).length);
  out.set(head, 0);
  out.set(nameBytes, head.length);
  return out;
}

/**
 * The byte chunks of one member, in order (header+name+pad, data, pad). `ino` must be unique per
 * member: the kernel links members with equal inode numbers as hard links.
 */
export function encodeCpioEntry(entry: CpioEntry, ino: number): Uint8Array[] {
  const base = { ino, nlink: 1, rdevMajor: 0, rdevMinor: 0 };
  switch (entry.kind) {
    case 'dir':
      return [header({ ...base, nlink: 2, mode: S_IFDIR | (entry.mode ?? 0o755), size: 0 }, entry.path)];
    case 'chardev':
      return [header({ ...base, mode: S_IFCHR | (entry.mode ?? 0o600), size: 0, rdevMajor: entry.major, rdevMinor: entry.minor }, entry.path)];
    case 'symlink': {
      const data = new TextEncoder().encode(entry.target);
      return [header({ ...base, mode: S_IFLNK | 0o777, size: data.length }, entry.path), data, pad4(data.length)];
    }
    case 'file':
      return [header({ ...base, mode: S_IFREG | (entry.mode ?? 0o644), size: entry.data.length }, entry.path), entry.data, pad4(entry.data.length)];
  }
}

/** The closing `TRAILER!!!` member. */
export function encodeCpioTrailer(): Uint8Array {
  return header({ ino: 0, mode: 0, nlink: 1, size: 0, rdevMajor: 0, rdevMinor: 0 }, TRAILER);
}
