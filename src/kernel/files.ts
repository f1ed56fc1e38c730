/**
 * The file calls the kernel module makes, behind one small interface: production uses node:fs,
 * tests inject faults (EBUSY storms, ENOENT, ESTALE, short reads) without a kernel or emulator.
 *
 * Every call is synchronous on purpose. The 7.2 writer exemption keys on the calling thread
 * (`current == measure_writer`, docs/kernel.md#the-writer-lock): an open, its reads and writes and its close
 * must run on one thread. fs.promises runs each call on a random libuv pool thread; the *Sync
 * calls run on the caller's thread.
 */
import * as fs from 'node:fs';

/** What {@link SecurityfsFiles.stat} reports of a path (symlinks followed unless `lstat`). */
export interface SecurityfsStat {
  readonly isFile: boolean;
  readonly isDirectory: boolean;
  readonly isSymbolicLink: boolean;
  /** Permission bits (`mode & 0o7777`). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

/** How a list file is opened: read-only (reader lock) or read-write (writer lock). */
export type OpenMode = 'r' | 'r+';

/** Synchronous securityfs access. Failures throw Node.js system errors (`err.code = 'EBUSY'`, ...). */
export interface SecurityfsFiles {
  open(path: string, mode: OpenMode): number;
  /** Reads up to `length` bytes at `position` into `buffer[0..)`; returns the count (0 at the end). */
  read(fd: number, buffer: Uint8Array, length: number, position: number): number;
  /** One write(2) of `data`; returns the count the kernel accepted. */
  write(fd: number, data: Uint8Array): number;
  close(fd: number): void;
  /** stat (follows symlinks) or lstat; undefined when the path does not exist. */
  stat(path: string, opts?: { lstat?: boolean }): SecurityfsStat | undefined;
  /** Names in a directory; undefined when it does not exist. */
  list(dir: string): string[] | undefined;
  /** A small text file (`/proc/cmdline`, counters), undefined when it does not exist. */
  readText(path: string): string | undefined;
}

function missing(err: unknown): boolean {
  return typeof err === 'object' && err !== null && 'code' in err && (err as { code: unknown }).code === 'ENOENT';
}

function toStat(s: fs.Stats): SecurityfsStat {
  return {
    isFile: s.isFile(),
    isDirectory: s.isDirectory(),
    isSymbolicLink: s.isSymbolicLink(),
    mode: s.mode & 0o7777,
    uid: s.uid,
    gid: s.gid,
  };
}

/** The real file system (node:fs, synchronous). */
export const nodeSecurityfsFiles: SecurityfsFiles = {
  open: (path, mode) => fs.openSync(path, mode),
  read: (fd, buffer, length, position) => fs.readSync(fd, buffer, 0, length, position),
  write: (fd, data) => fs.writeSync(fd, data),
  close: (fd) => fs.closeSync(fd),
  stat(path, opts) {
    try {
      return toStat(opts?.lstat === true ? fs.lstatSync(path) : fs.statSync(path));
    } catch (err) {
      if (missing(err)) return undefined;
      throw err;
    }
  },
  list(dir) {
    try {
      return fs.readdirSync(dir);
    } catch (err) {
      if (missing(err)) return undefined;
      throw err;
    }
  },
  readText(path) {
    try {
      return fs.readFileSync(path, 'latin1');
    } catch (err) {
      if (missing(err)) return undefined;
      throw err;
    }
  },
};
