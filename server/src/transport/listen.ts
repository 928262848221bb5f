// Where clients come from: a listening UNIX socket created at a path, or one inherited as an fd (`--fd N`,
// systemd socket activation), per the vfio-user backend program conventions (`--socket-path` / `--fd`,
// mutually exclusive). The addon does the socket work (bind/listen/accept4, stale-socket replacement: a socket
// file nobody listens on is replaced, a live one is EADDRINUSE); this module only picks the source.

import { lstatSync, type Stats } from 'node:fs';
import * as native from 'vfio-user-native';

export interface ListenSource {
  socketPath?: string;
  fd?: number;
  /** Socket file mode (default 0o600: only the owner, usually the VMM's user, may connect). */
  mode?: number;
}

/** Validates that exactly one source is given. */
export function checkListenSource(src: ListenSource): void {
  if (src.socketPath !== undefined && src.fd !== undefined)
    throw new TypeError('socketPath and fd are exclusive');
  if (src.socketPath === undefined && src.fd === undefined)
    throw new TypeError('socketPath or fd is required');
}

export function openListener(src: ListenSource): native.Listener {
  checkListenSource(src);
  if (src.fd !== undefined) return native.Listener.adopt(src.fd);
  const path = src.socketPath!;
  try {
    return native.Listener.listen(path, { mode: src.mode ?? 0o600 });
  } catch (err) {
    throw explainListenError(path, err);
  }
}

/**
 * bind() says EADDRINUSE both for a live server and for a file that is not a socket (the addon never removes
 * one): tell the two apart, so the user reads "is not a socket" rather than "address in use".
 */
function explainListenError(path: string, err: unknown): unknown {
  if (!native.isErrno(err, 'EADDRINUSE')) return err;
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch {
    return err;
  }
  if (st.isSocket()) {
    return Object.assign(new Error(`another server is listening on ${path} (EADDRINUSE)`), {
      code: 'EADDRINUSE',
      errno: (err as { errno?: number }).errno,
      syscall: 'bind',
    });
  }
  return Object.assign(new Error(`${path} exists and is not a socket (ENOTSOCK)`), {
    code: 'ENOTSOCK',
    errno: 88,
    syscall: 'bind',
  });
}
