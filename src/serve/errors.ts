/**
 * Typed failures of the log server. Each code maps to one HTTP status (`httpStatus`), so the
 * request handler never guesses; the CLI prints the same code.
 */
import { DetailedError } from '../errors.js';

/** Stable codes of {@link ServeError}, with the HTTP status each answers with. */
export const SERVE_ERROR_STATUS = {
  /** The HTTP parser refused the request (not HTTP, bad framing); answered before routing. */
  SERVE_BAD_REQUEST: 400,
  /** The request headers exceed the server's limit. */
  SERVE_HEADERS_TOO_LARGE: 431,
  /** The request did not arrive completely within the request timeout. */
  SERVE_REQUEST_TIMEOUT: 408,
  /** A query parameter is missing, not a number, negative, too large or not one of the allowed values. */
  SERVE_BAD_PARAMETER: 400,
  /** An evidence cursor does not parse or does not name a chunk boundary. */
  SERVE_BAD_CURSOR: 400,
  /** No such path. */
  SERVE_NOT_FOUND: 404,
  /** The boot asked for is not in the store. */
  SERVE_UNKNOWN_BOOT: 404,
  /** The bank asked for was not replayed on that boot (no such kernel list). */
  SERVE_UNKNOWN_BANK: 404,
  /** The method is not GET (CONNECT included). */
  SERVE_METHOD_NOT_ALLOWED: 405,
  /** The cursor names a boot retention already dropped. */
  SERVE_CURSOR_GONE: 410,
  /** The request line is longer than the server accepts. */
  SERVE_URI_TOO_LONG: 414,
  /** `from` is past the end of the log (`from` equal to the count gives an empty log). */
  SERVE_RANGE: 416,
  /** The endpoint needs a source the server was started without (no TPM for quotes). */
  SERVE_UNAVAILABLE: 503,
  /**
   * The server is answering as many requests of this class (long streams, or short requests) or
   * holding as many connections as it admits; `Retry-After` says when to try again.
   */
  SERVE_BUSY: 503,
  /** Records are neither in the store nor in the kernel: Invariant 1 is broken. */
  SERVE_LOG_GAP: 500,
  /** A TCP bind on a non-loopback address without TLS client certificates (design.md "Serving"). */
  SERVE_INSECURE_BIND: 500,
  /** The socket path or port is in use by a live server. */
  SERVE_ADDRESS_IN_USE: 500,
  /** TLS files could not be read or do not form a server configuration. */
  SERVE_TLS_CONFIG: 500,
  /** The Keylime payload key is not an RSA key (or its file cannot be read or written). */
  SERVE_BAD_PAYLOAD_KEY: 500,
} as const;

/** Stable codes of {@link ServeError}. */
export type ServeErrorCode = keyof typeof SERVE_ERROR_STATUS;

/** Data a caller needs to act on a serve failure, all optional. */
export interface ServeErrorDetails {
  /** The query parameter concerned. */
  readonly parameter?: string;
  /** Store boot number concerned. */
  readonly boot?: number;
  /** Global record index the caller asked for. */
  readonly index?: number;
  /** Records of the boot at the time of the request (SERVE_RANGE). */
  readonly count?: number;
}

/** The one error class of `src/serve`; switch on `code`. */
export class ServeError extends DetailedError<ServeErrorCode, ServeErrorDetails> {
  /** The HTTP status this error answers with. */
  get httpStatus(): number {
    return SERVE_ERROR_STATUS[this.code];
  }
}
