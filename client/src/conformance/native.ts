// The few system calls the suite needs, over the project's addon (`vfio-user-native`): AF_UNIX sockets that
// carry fds, memfds, eventfds. Everything the suite does with the addon goes through this one interface.
import { Connection, closeFd, eventfd, eventfdRead, memfdCreate, socketpair } from 'vfio-user-native';

export interface RawSocketHandlers {
  /** One whole message (framed by its header's size field) and the fds that arrived with it. */
  onMessage(buf: Buffer, fds: number[]): void;
  onClose(reason?: string): void;
}

export interface RawSocket {
  /** One sendmsg of `bytes` (need not be a whole message) with `fds` attached. */
  send(bytes: Uint8Array, fds: number[]): void;
  close(): void;
}

export interface NativeApi {
  /** Connect to `path` (throws with `code`: ENOENT, ECONNREFUSED, ...) and start reading. */
  connect(path: string, h: RawSocketHandlers): RawSocket;
  /** Adopt a connected socket fd (ownership passes). */
  wrap(fd: number, h: RawSocketHandlers): RawSocket;
  socketpair(): [number, number];
  memfd(name: string, size: number): number;
  eventfd(): number;
  /** The eventfd counter, reset to 0; 0n when nothing was signalled (never blocks). */
  eventfdRead(fd: number): bigint;
  closeFd(fd: number): void;
}

/** The largest message the suite accepts from a server (a bigger one closes the connection with EPROTO). */
const MAX_MESSAGE = 64 * 1024 * 1024;

function start(c: Connection, h: RawSocketHandlers): RawSocket {
  let closed = false;
  c.start(
    {
      onMessage: (data, fds) => h.onMessage(data, fds),
      onClose: (err) => {
        closed = true;
        h.onClose(err ? `${(err as { code?: string }).code ?? ''} ${err.message}`.trim() : undefined);
      },
    },
    // 'exact' never reads past the current message, so fds are attributed correctly whatever the sender does.
    { maxMessageSize: MAX_MESSAGE, framing: 'exact' },
  );
  return {
    send(bytes, fds) {
      if (!closed) c.send(bytes, fds);
    },
    close() {
      c.close();
    },
  };
}

export function loadNative(): NativeApi {
  return {
    connect: (path, h) => start(Connection.connect(path), h),
    wrap: (fd, h) => start(Connection.fromFd(fd), h),
    socketpair: () => socketpair(),
    memfd: (name, size) => memfdCreate(name, size),
    eventfd: () => eventfd(0),
    eventfdRead: (fd) => eventfdRead(fd),
    closeFd: (fd) => closeFd(fd),
  };
}
