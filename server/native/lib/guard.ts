// Defences against a hostile client's fds (src/guard.c; docs/hardening.md): guest-memory copies that survive the
// file shrinking under its mapping, interrupt signals that never block, the process's fd limit.
import { addon } from './addon.js';

/**
 * Copies `length` bytes from src[srcOffset..] to dst[dstOffset..] with a SIGBUS guard: false when a page of
 * either side is no longer backed by its file (the client truncated it after we mapped it), true otherwise.
 * RangeError when a range is outside its view. For mappings of files that can shrink (no F_SEAL_SHRINK).
 */
export function guardedCopy(
  dst: Uint8Array,
  dstOffset: number,
  src: Uint8Array,
  srcOffset: number,
  length: number,
): boolean {
  return addon.guardedCopy(dst, dstOffset, src, srcOffset, length);
}

/** Sets O_NONBLOCK on `fd` (on its file description: the client's copies see it too). */
export function setNonBlocking(fd: number): void {
  addon.setNonBlocking(fd);
}

/**
 * Writes the 8-byte `value` (default 1n) to an eventfd or pipe without ever blocking (O_NONBLOCK is set again
 * first if someone cleared it). Returns 0, or the errno: EAGAIN when the counter or the pipe is full, EBADF...
 */
export function signalFd(fd: number, value?: bigint): number {
  return addon.signalFd(fd, value);
}

/** pipe2(O_CLOEXEC) -> [readFd, writeFd] (tests: an interrupt fd that is not an eventfd). */
export function pipe(): [number, number] {
  return addon.pipe();
}

export interface NofileLimit {
  /** -1: unlimited */
  soft: number;
  hard: number;
}

/** getrlimit(RLIMIT_NOFILE). */
export function nofileLimit(): NofileLimit {
  return addon.nofileLimit();
}

/** Sets the soft RLIMIT_NOFILE (clamped to the hard limit); returns the limits now in force. */
export function setNofileLimit(soft: number): NofileLimit {
  return addon.setNofileLimit(soft);
}
