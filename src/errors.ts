/**
 * The one base class of every error imakeep throws on purpose.
 *
 * `code` is stable: callers and the CLI switch on it, the README lists every code. Modules subclass
 * it per concern (ImaError, TpmError, KernelError, StoreError, ...) and attach the data a caller
 * needs to act (record index, byte offset, TPM response code, errno, ...). Built only on the throw
 * path; no side effects on import.
 */
export class ImakeepError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * The shape most modules' one error class has: a code from the module's closed set `C` and the
 * data to act on as `details` (every field of `D` optional: each code fills what it knows).
 * A module's class is then `class StoreError extends DetailedError<StoreErrorCode, StoreErrorDetails> {}`.
 */
export class DetailedError<C extends string, D extends object> extends ImakeepError {
  declare readonly code: C;
  readonly details: Partial<D>;

  constructor(code: C, message: string, details: Partial<D> = {}, options?: { cause?: unknown }) {
    super(code, message, options);
    this.details = details;
  }
}

/** A caller's mistake in how a verb or function was called (CLI exit status 2). */
export class UsageError extends ImakeepError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

/** True for any error carrying a stable imakeep code. */
export function isImakeepError(e: unknown): e is ImakeepError {
  return e instanceof ImakeepError;
}
