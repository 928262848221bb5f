// Errors of the DMA address space.
//
// Two families: `DmaError` is what a device model sees when an access into guest memory fails (typed by kind so
// a model can tell "the guest gave me a bad address" from "the transport broke"); `DmaMapError` is what a
// DMA_MAP/DMA_UNMAP request fails with, carrying the errno the session puts in the error reply.

import { Errno, ErrnoError } from 'vfio-user-protocol';

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
  unmapped: Errno.EFAULT,
  permission: Errno.EPERM,
  range: Errno.EINVAL,
  io: Errno.EIO,
};

/**
 * A device's DMA access failed (unmapped IOVA, missing permission, out of range, I/O error); `errno` is what a
 * request that caused it answers.
 */
export class DmaError extends ErrnoError {
  readonly kind: DmaErrorKind;
  /** The IOVA at which the access failed (the first byte not served). */
  readonly iova: bigint;
  constructor(kind: DmaErrorKind, iova: bigint, message: string, errno?: number) {
    super(errno ?? defaultErrno[kind], `${message} at iova 0x${iova.toString(16)}`);
    this.name = 'DmaError';
    this.kind = kind;
    this.iova = iova;
  }
}

/** A DMA_MAP/DMA_UNMAP (or subscriber) failure: `errno` goes into the error reply unchanged. */
export class DmaMapError extends ErrnoError {
  constructor(errno: number, message: string) {
    super(errno, message);
    this.name = 'DmaMapError';
  }
}
