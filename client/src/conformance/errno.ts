// Errno numbers and names (Linux), from Node's own table.
import { constants } from 'node:os';

const E = constants.errno;

export const Errno = {
  EPERM: E.EPERM,
  ENOENT: E.ENOENT,
  E2BIG: E.E2BIG,
  EBADF: E.EBADF,
  ENOMEM: E.ENOMEM,
  EACCES: E.EACCES,
  EFAULT: E.EFAULT,
  EBUSY: E.EBUSY,
  EEXIST: E.EEXIST,
  ENODEV: E.ENODEV,
  EINVAL: E.EINVAL,
  ENOTTY: E.ENOTTY,
  ENOSPC: E.ENOSPC,
  ERANGE: E.ERANGE,
  ENOSYS: E.ENOSYS,
  ENOMSG: E.ENOMSG,
  EPROTO: E.EPROTO,
  EOVERFLOW: E.EOVERFLOW,
  EMSGSIZE: E.EMSGSIZE,
  ENOTSUP: E.ENOTSUP,
  EOPNOTSUPP: E.EOPNOTSUPP,
  ETIMEDOUT: E.ETIMEDOUT,
  EIO: E.EIO,
} as const;

const names = new Map<number, string>();
for (const [name, value] of Object.entries(E)) if (!names.has(value)) names.set(value, name);

export function errnoName(n: number): string {
  return names.get(n) ?? `errno ${n}`;
}
