// UNIX datagram sockets (Node has none): sd_notify messages to $NOTIFY_SOCKET, and receiving them in tests.
// A path starting with '@' names a socket in the abstract namespace.
import { addon } from './addon.js';

/** Sends one datagram to `path` without blocking (a full receiver queue throws EAGAIN). Returns bytes sent. */
export function sendDatagram(path: string, data: Uint8Array | string): number {
  return addon.sendDatagramUnix(path, typeof data === 'string' ? Buffer.from(data) : data);
}

/** A non-blocking datagram socket bound to `path` (file mode `mode`, default 0o600); returns its fd. */
export function bindDatagram(path: string, mode = 0o600): number {
  return addon.bindDatagramUnix(path, mode);
}

/** The next queued datagram on `fd`, or null when none is waiting (never blocks). */
export function recvDatagram(fd: number): Buffer | null {
  return addon.recvDatagram(fd);
}
