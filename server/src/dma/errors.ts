// Errors of the DMA address space.
//
// Two families: `DmaError` is what a device model sees when an access into guest memory fails (typed by kind so
// a model can tell "the guest gave me a bad address" from "the transport broke"); `DmaMapError` is what a
// DMA_MAP/DMA_UNMAP request fails with, carrying the errno the session puts in the error reply.

import { constants } from 'node:os';

export const E = constants.errno;

/**
 * Why a device DMA failed:
 * - `unmapped`: (part of) the range is not covered by any mapping (errno EFAULT);
 * - `permission`: a mapping covers it but lacks READ (for reads) or WRITE (for writes) (errno EPERM);
 * - `range`: the request itself is malformed: negative/huge length, address wrap (errno EINVAL);
 * - `io`: the backing store failed: pread/pwrite error, the client answered a DMA_READ/WRITE with an error,
 *   timed out, or went away (errno from the failure: EIO, ETIMEDOUT, ENOTCONN, the client's errno...).
 */
export type DmaErrorKind = 'unmapped' | 'permission' | 'range' | 'io';

const defaultErrno: Record<DmaErrorKind, number> = {
  unmapped: E.EFAULT,
  permission: E.EPERM,
  range: E.EINVAL,
  io: E.EIO,
};

export class DmaError extends Error {
  readonly kind: DmaErrorKind;
  readonly errno: number;
  /** The IOVA at which the access failed (the first byte not served). */
  readonly iova: bigint;
  constructor(kind: DmaErrorKind, iova: bigint, message: string, errno?: number) {
    super(`${message} at iova 0x${iova.toString(16)}`);
    this.name = 'DmaError';
    this.kind = kind;
    this.iova = iova;
    this.errno = errno ?? defaultErrno[kind];
  }
}

/** A DMA_MAP/DMA_UNMAP (or subscriber) failure: `errno` goes into the error reply unchanged. */
export class DmaMapError extends Error {
  readonly errno: number;
  constructor(errno: number, message: string) {
    super(message);
    this.name = 'DmaMapError';
    this.errno = errno;
  }
}

/** Extracts a positive errno from anything thrown by a subscriber, a backend or the addon (default EIO). */
export function errnoOf(err: unknown, fallback: number = E.EIO): number {
  if (err && typeof err === 'object') {
    const e = err as { errno?: unknown; code?: unknown };
    if (typeof e.errno === 'number' && e.errno !== 0) return Math.abs(e.errno);
    if (typeof e.code === 'string') {
      const n = (E as Record<string, number>)[e.code];
      if (typeof n === 'number') return n;
    }
  }
  return fallback;
}
