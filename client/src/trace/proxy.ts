// The live mode of `vfio-user-trace`: a proxy between a VMM and a server. It listens on one socket path (give
// that path to QEMU), connects to the server's socket for every client, and passes each message through
// unchanged, with its fds, in both directions, while the printer shows it (and a recorder may keep it).
//
// Messages are forwarded whole ('exact' framing, so fds stay with the message they came with); the fds received
// are sent on and then closed here (the addon dups what it queues). A side that stops reading makes the proxy
// stop reading the other side until its send queue drains, so the proxy buffers a bounded amount. When either
// side closes, the other is closed. A twin socket, if negotiated, carries its fd through and its traffic
// bypasses the proxy (QEMU does not negotiate it).
import { Connection, closeFd, Listener } from 'vfio-user-native';

/** Large enough for any message a peer may send (64 MiB max_data_xfer_size plus headers). */
const MAX_MESSAGE = (64 << 20) + 4096;

export interface ProxyTap {
  /** A message passing through (`fromServer` = server -> client); `bytes` is valid during the call only. */
  message(fromServer: boolean, bytes: Uint8Array, fds: number): void;
  /** A client connected / a pair closed. */
  note(text: string): void;
}

export class TraceProxy {
  private listener: Listener | undefined;
  private readonly pairs = new Set<{ close(): void }>();
  private nextId = 1;

  constructor(
    private readonly listenPath: string,
    private readonly serverPath: string,
    private readonly tap: ProxyTap,
  ) {}

  start(): void {
    this.listener = Listener.listen(this.listenPath, { mode: 0o600 });
    this.listener.start(
      (client) => this.onClient(client),
      (err) => this.tap.note(`accept failed: ${err.message}`),
    );
  }

  private onClient(client: Connection): void {
    const id = this.nextId++;
    let server: Connection;
    try {
      server = Connection.connect(this.serverPath);
    } catch (err) {
      this.tap.note(`client ${id}: cannot reach the server at ${this.serverPath}: ${(err as Error).message}`);
      client.close();
      return;
    }
    let peer = '';
    try {
      const p = client.peerCredentials();
      peer = ` (pid ${p.pid}, uid ${p.uid})`;
    } catch {
      // not available
    }
    this.tap.note(`client ${id} connected${peer}`);
    let closed = false;
    const pair = {
      close: () => {
        if (closed) return;
        closed = true;
        this.pairs.delete(pair);
        client.close();
        server.close();
      },
    };
    this.pairs.add(pair);
    const forward = (from: Connection, to: Connection, fromServer: boolean) => ({
      onMessage: (data: Uint8Array, fds: number[]) => {
        try {
          this.tap.message(fromServer, data, fds.length);
          // false = queued: stop reading this side until the other drains.
          if (!to.send(data, fds)) from.pause();
        } catch (err) {
          this.tap.note(`client ${id}: forwarding failed: ${(err as Error).message}`);
          pair.close();
        } finally {
          for (const fd of fds) closeFd(fd);
        }
      },
      onClose: (err?: Error) => {
        this.tap.note(
          `client ${id}: ${fromServer ? 'server' : 'client'} closed${err ? ` (${err.message})` : ''}`,
        );
        pair.close();
      },
    });
    // A side's send queue drained: resume reading the side that feeds it.
    client.start(
      { ...forward(client, server, false), onDrain: () => !closed && server.resume() },
      { maxMessageSize: MAX_MESSAGE, framing: 'exact' },
    );
    server.start(
      { ...forward(server, client, true), onDrain: () => !closed && client.resume() },
      { maxMessageSize: MAX_MESSAGE, framing: 'exact' },
    );
  }

  close(): void {
    for (const p of [...this.pairs]) p.close();
    this.listener?.close();
    this.listener = undefined;
  }
}
