// Errors. Every malformed input becomes a ProtocolError carrying the errno the receiver answers with (an error
// reply is the header only, flags 0x21, `error` = errno; spec "Header"). Codes are stable strings for tests/logs.

/**
 * The Linux errno values (x86-64/generic numbering) that vfio-user peers exchange and that this project's code
 * names: the one errno table of the project (the server and the client import it; `os.constants.errno` would tie
 * the protocol to Node). ENOTSUP and EOPNOTSUPP are the same number on Linux.
 */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EINVAL: 22,
  EMFILE: 24,
  ENOTTY: 25,
  ENOSPC: 28,
  EPIPE: 32,
  ERANGE: 34,
  ENOSYS: 38,
  ENOMSG: 42,
  EPROTO: 71,
  EOVERFLOW: 75,
  EMSGSIZE: 90,
  ENOTSUP: 95,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ECONNRESET: 104,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
} as const;

/** The name of an errno the protocol uses (a key of Errno). */
export type ErrnoName = keyof typeof Errno;

const errnoNames = new Map<number, ErrnoName>();
for (const [name, value] of Object.entries(Errno) as [ErrnoName, number][]) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** `EINVAL`, ... or `errno N` for a value this table does not name. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/**
 * The base of every error that carries an errno: a request refused for a reason the peer must hear
 * (`ProtocolError`, the server's device/DMA/IRQ errors) or a failure the caller may act on by errno. `errno` is
 * positive.
 */
export class ErrnoError extends Error {
  readonly errno: number;
  constructor(errno: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ErrnoError';
    this.errno = errno;
  }
}

/**
 * The positive errno of anything thrown: an ErrnoError, the native addon's errors (`errno`, `code`), Node's
 * system errors (negative `errno`), or `fallback` for anything else (a plain Error is a bug, not a refusal).
 */
export function errnoOf(err: unknown, fallback: number = Errno.EIO): number {
  if (err && typeof err === 'object') {
    const e = err as { errno?: unknown; code?: unknown };
    if (typeof e.errno === 'number' && e.errno !== 0) return Math.abs(e.errno);
    if (typeof e.code === 'string' && Object.hasOwn(Errno, e.code)) return Errno[e.code as ErrnoName];
  }
  return fallback;
}

/** Why a message was refused; stable identifiers for tests, logs and the conformance suite. */
export type ProtocolErrorCode =
  | 'SHORT_HEADER'
  | 'BAD_MESSAGE_SIZE'
  | 'MESSAGE_TOO_LARGE'
  | 'BAD_MESSAGE_TYPE'
  | 'UNKNOWN_COMMAND'
  | 'WRONG_DIRECTION'
  | 'BAD_PAYLOAD_SIZE'
  | 'BAD_ARGSZ'
  | 'BAD_FLAGS'
  | 'BAD_FD_COUNT'
  | 'BAD_RANGE'
  | 'BAD_VALUE'
  | 'LIMIT_EXCEEDED'
  | 'BAD_CAP_CHAIN'
  | 'BAD_JSON'
  | 'BAD_CAPABILITY'
  | 'VERSION_MISMATCH'
  | 'NEGOTIATION'
  | 'BAD_STATE_TRANSITION'
  | 'FRAMER_FAILED';

/** A malformed or refused message: `errno` is what the receiver answers with. */
export class ProtocolError extends ErrnoError {
  readonly code: ProtocolErrorCode;
  /** The message without the errno suffix. */
  readonly detail: string;

  constructor(errno: number, code: ProtocolErrorCode, detail: string) {
    super(errno, `${detail} (${errnoName(errno)})`);
    this.name = 'ProtocolError';
    this.code = code;
    this.detail = detail;
  }
}

/** Throws a ProtocolError; `errno` defaults to EINVAL, the answer to nearly every malformed request. */
export function fail(code: ProtocolErrorCode, message: string, errno: number = Errno.EINVAL): never {
  throw new ProtocolError(errno, code, message);
}
