/**
 * EBUSY retry. The 7.2 lock admits many readers or one writer (docs/kernel.md#the-writer-lock) and an open
 * that conflicts fails at once with EBUSY instead of waiting: the caller backs off and tries again.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { KernelError, errnoOf, toKernelError, type KernelSyscall } from './errors.js';

/** How long to keep trying an open that fails with EBUSY. */
export interface BusyRetryPolicy {
  /** Total attempts, the first included (default 8). */
  readonly attempts?: number;
  /** First backoff bound in ms (default 5); doubles each attempt. */
  readonly baseDelayMs?: number;
  /** Upper bound of one backoff in ms (default 500). */
  readonly maxDelayMs?: number;
  /** Source of jitter in [0, 1) (default Math.random); tests pin it. */
  readonly random?: () => number;
}

/** Default: 8 attempts, at most ~1.3 s of waiting in all (full jitter). */
export const DEFAULT_BUSY_RETRY: Required<BusyRetryPolicy> = {
  attempts: 8,
  baseDelayMs: 5,
  maxDelayMs: 500,
  random: Math.random,
};

/**
 * Runs `step` (synchronous: one open..close on this thread) until it does not fail with EBUSY.
 * Waits between attempts with full jitter, `random() * min(max, base * 2^attempt)`, so that
 * contending agents spread out. Failures are thrown as KernelError (`KERNEL_EBUSY` with the number
 * of attempts when they run out); any other exception passes through as it is.
 */
export async function retryOnBusy<T>(
  step: () => T,
  what: { syscall: KernelSyscall; path: string },
  policy: BusyRetryPolicy = {},
): Promise<{ value: T; attempts: number }> {
  const p = { ...DEFAULT_BUSY_RETRY, ...policy };
  for (let attempt = 1; ; attempt++) {
    try {
      return { value: step(), attempts: attempt };
    } catch (err) {
      // A caller's own exception (e.g. thrown by a decision callback) is not a kernel error.
      if (!(err instanceof KernelError) && errnoOf(err) === undefined) throw err;
      const kerr = toKernelError(err, what.syscall, what.path, attempt);
      if (!kerr.retryable || attempt >= p.attempts) throw kerr;
      await delay(p.random() * Math.min(p.maxDelayMs, p.baseDelayMs * 2 ** (attempt - 1)));
    }
  }
}
