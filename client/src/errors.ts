// Errors the client raises. Three kinds matter to a caller and are kept apart on purpose:
// - the server answered with an error reply (VfioUserError: the errno it sent, for the command it failed);
// - the server did not answer in time (VfioUserError with errno ETIMEDOUT, `timedOut` set);
// - the connection is gone, so nothing will ever answer (ConnectionClosedError), possibly because the server
//   broke the protocol (ProtocolViolationError is then the close reason).
import { Errno, errnoName, commandName as protocolCommandName } from 'vfio-user-protocol';

/** `DMA_MAP`, ... or `UNKNOWN(n)`. */
export function commandName(command: number): string {
  return protocolCommandName(command);
}

/** The server answered `command` with an error reply carrying `errno` (or the request timed out: ETIMEDOUT). */
export class VfioUserError extends Error {
  readonly errno: number;
  readonly command: number;
  /** True when no reply came within the request's timeout (errno is then ETIMEDOUT). */
  readonly timedOut: boolean;
  constructor(errno: number, command: number, message?: string, timedOut = false) {
    super(message ?? `${commandName(command)} failed: ${errnoName(errno)}`);
    this.name = 'VfioUserError';
    this.errno = errno;
    this.command = command;
    this.timedOut = timedOut;
  }
  /** The errno's symbolic name, e.g. `EINVAL`. */
  get code(): string {
    return errnoName(this.errno);
  }
}

/** What the peer did wrong, by kind (the conformance suite counts these). */
export type ViolationKind =
  | 'bad-header' // size < 16 or a message type other than command/reply
  | 'unsolicited-reply' // a reply whose id matches no pending request
  | 'late-reply' // a reply to a request that already timed out
  | 'reply-command-mismatch' // a reply whose command differs from the request's
  | 'oversize-reply' // a reply larger than the request's reply budget (QEMU: "reply larger than recv buffer")
  | 'oversize-request' // a server request larger than our max_data_xfer_size + its header
  | 'unexpected-fds' // fds attached to a message that may not carry them
  | 'bad-reply'; // a reply whose payload does not match the request (wrong echo, short, inconsistent)

/** The server broke the protocol (a bad reply, unexpected fds, ...): what QEMU would drop the connection for. */
export class ProtocolViolationError extends Error {
  readonly errno = Errno.EPROTO;
  readonly kind: ViolationKind;
  constructor(kind: ViolationKind, message: string) {
    super(`protocol violation (${kind}): ${message}`);
    this.name = 'ProtocolViolationError';
    this.kind = kind;
  }
}

/** The connection is closed (by us, by the peer, or after a fatal protocol violation: see `cause`). */
export class ConnectionClosedError extends Error {
  constructor(message = 'vfio-user connection closed', cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ConnectionClosedError';
  }
}
