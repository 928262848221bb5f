// Errors. Every malformed input becomes a ProtocolError carrying the errno the receiver answers with (an error
// reply is the header only, flags 0x21, `error` = errno; spec "Header"). Codes are stable strings for tests/logs.

/** The Linux errno values vfio-user peers exchange (x86-64/generic numbering). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  E2BIG: 7,
  EBADF: 9,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ENOSYS: 38,
  EPROTO: 71,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ETIMEDOUT: 110,
} as const;

export type ErrnoName = keyof typeof Errno;

const errnoNames = new Map<number, ErrnoName>(
  (Object.entries(Errno) as [ErrnoName, number][]).map(([name, value]) => [value, name]),
);

/** `EINVAL`, ... or `errno N` for a value this table does not name. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
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

export class ProtocolError extends Error {
  /** The positive errno to put in the error reply. */
  readonly errno: number;
  readonly code: ProtocolErrorCode;
  /** The message without the errno suffix. */
  readonly detail: string;

  constructor(errno: number, code: ProtocolErrorCode, detail: string) {
    super(`${detail} (${errnoName(errno)})`);
    this.name = 'ProtocolError';
    this.errno = errno;
    this.code = code;
    this.detail = detail;
  }
}

/** Throws a ProtocolError; `errno` defaults to EINVAL, the answer to nearly every malformed request. */
export function fail(code: ProtocolErrorCode, message: string, errno: number = Errno.EINVAL): never {
  throw new ProtocolError(errno, code, message);
}
