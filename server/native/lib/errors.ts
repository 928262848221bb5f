// Errors raised by the TypeScript layer, shaped like the addon's: { errno (positive), code, syscall }.
import { constants } from 'node:os';

export interface ErrnoError extends Error {
  errno: number;
  code: string;
  syscall: string;
}

/** Builds an Error like the addon's: message "<syscall>: <text> (<CODE>)". */
export function errnoError(code: keyof typeof constants.errno, syscall: string, text: string): ErrnoError {
  const err = new Error(`${syscall}: ${text} (${code})`) as ErrnoError;
  err.errno = constants.errno[code];
  err.code = code;
  err.syscall = syscall;
  return err;
}

/** True when `err` is an Error carrying the given code (e.g. isErrno(e, 'ENOENT')). */
export function isErrno(err: unknown, code: string): err is ErrnoError {
  return err instanceof Error && (err as Partial<ErrnoError>).code === code;
}
