/**
 * Shared helpers of the kernel tests: errno of a call, one request written like `echo N > file`,
 * a shell runner, and a fault-injecting SecurityfsFiles over an in-memory list.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SecurityfsFiles } from '../../src/kernel/index.js';
import { errnoOf as kernelErrnoOf } from '../../src/testing/index.js';

/** The repository root (this file runs from `dist/test/kernel/`). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** `ok`, or the errno code a call failed with. */
export function errnoOf(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    return kernelErrnoOf(err) ?? String(err);
  }
}

/**
 * Opens `path` read-write, writes `text` in one write(2), closes: `ok` + the byte count, or the
 * errno of the open or the write.
 */
export function writeRequest(path: string, text: string | Uint8Array): string {
  let fd: number;
  try {
    fd = openSync(path, 'r+');
  } catch (err) {
    return errnoOf(() => {
      throw err;
    });
  }
  try {
    const n = writeSync(fd, typeof text === 'string' ? Buffer.from(text, 'latin1') : text);
    return `ok ${n}`;
  } catch (err) {
    return errnoOf(() => {
      throw err;
    });
  } finally {
    closeSync(fd);
  }
}

/**
 * Runs `sh -c script` (optionally under `setpriv` options, or with bash, whose `echo` names the
 * errno of a failed write where dash only says "I/O error"); returns status, stdout, stderr.
 */
export function sh(script: string, setpriv: string[] = [], shell: 'sh' | 'bash' = 'sh'): { status: number | null; stdout: string; stderr: string } {
  const [cmd, args] = setpriv.length > 0 ? ['setpriv', [...setpriv, shell, '-c', script]] : [shell, ['-c', script]];
  const r = spawnSync(cmd as string, args as string[], { encoding: 'latin1', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A Node.js-style system error. */
export function sysError(code: string): Error {
  return Object.assign(new Error(`${code}: injected`), { code });
}

/** Fault plan of {@link FakeListFiles}. */
export interface FakeFaults {
  /** Opens that fail with EBUSY before one succeeds. */
  busyOpens?: number;
  /** Error code every open fails with. */
  openError?: string;
  /** Error code every write fails with. */
  writeError?: string;
  /** Largest read(2) result (short reads). */
  maxRead?: number;
}

/**
 * One list file in memory: `content` is what the kernel shows now (tests grow it, cut it). Counts
 * opens, records writes; everything else of SecurityfsFiles is absent.
 */
export class FakeListFiles implements SecurityfsFiles {
  content: Uint8Array = new Uint8Array(0);
  opens = 0;
  readonly writes: string[] = [];
  #fds = new Set<number>();
  #next = 3;

  constructor(
    readonly path: string,
    readonly faults: FakeFaults = {},
  ) {}

  get openFds(): number {
    return this.#fds.size;
  }

  open(path: string): number {
    this.opens++;
    if (path !== this.path) throw sysError('ENOENT');
    if (this.faults.openError !== undefined) throw sysError(this.faults.openError);
    if ((this.faults.busyOpens ?? 0) > 0) {
      this.faults.busyOpens = (this.faults.busyOpens ?? 0) - 1;
      throw sysError('EBUSY');
    }
    const fd = this.#next++;
    this.#fds.add(fd);
    return fd;
  }

  read(fd: number, buffer: Uint8Array, length: number, position: number): number {
    if (!this.#fds.has(fd)) throw sysError('EBADF');
    const n = Math.max(0, Math.min(length, this.faults.maxRead ?? length, this.content.length - position));
    buffer.set(this.content.subarray(position, position + n));
    return n;
  }

  write(fd: number, data: Uint8Array): number {
    if (!this.#fds.has(fd)) throw sysError('EBADF');
    if (this.faults.writeError !== undefined) throw sysError(this.faults.writeError);
    this.writes.push(Buffer.from(data).toString('latin1'));
    return data.length;
  }

  close(fd: number): void {
    this.#fds.delete(fd);
  }

  stat(): undefined {
    return undefined;
  }

  list(): undefined {
    return undefined;
  }

  readText(): undefined {
    return undefined;
  }
}
