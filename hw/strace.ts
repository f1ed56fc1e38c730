/**
 * Counting a process's flushes to stable storage without instrumenting it: run it under
 * `strace -f --seccomp-bpf -e trace=<sync calls> -c`. With the seccomp filter only the traced
 * calls stop the process, so the rest of it runs at full speed (strace(1), `--seccomp-bpf`).
 */
import { spawnSync } from 'node:child_process';

/** The calls that flush file data to the device (LevelDB's env_posix uses fdatasync/fsync). */
export const SYNC_SYSCALLS = ['fsync', 'fdatasync', 'sync_file_range', 'syncfs', 'msync'] as const;

/** Whether strace runs here (installed, and ptrace allowed in this container). */
export function straceUsable(): boolean {
  const r = spawnSync('strace', ['-f', '--seccomp-bpf', '-e', 'trace=fsync', '-c', '-o', '/dev/null', 'true'], { stdio: 'ignore' });
  return r.status === 0;
}

/** `strace` arguments that run `command` counting {@link SYNC_SYSCALLS} into `summaryFile`. */
export function straceSyncArgs(summaryFile: string, command: readonly string[]): string[] {
  return ['-f', '--seccomp-bpf', '-e', `trace=${SYNC_SYSCALLS.join(',')}`, '-c', '-o', summaryFile, ...command];
}

/**
 * Calls per syscall from a `strace -c` summary table:
 * `% time  seconds  usecs/call  calls  errors syscall` rows, then a `total` row (skipped).
 */
export function parseStraceSummary(text: string): Map<string, number> {
  const calls = new Map<string, number>();
  for (const line of text.split('\n')) {
    // errors is blank when zero, so the row has 5 or 6 columns; calls is always the 4th.
    const cols = line.trim().split(/\s+/);
    const name = cols[cols.length - 1];
    if (cols.length < 5 || name === undefined || name === 'total' || name === 'syscall') continue;
    const n = Number(cols[3]);
    if (Number.isInteger(n)) calls.set(name, n);
  }
  return calls;
}
