// systemd's readiness protocol (sd_notify): when $NOTIFY_SOCKET is set (Type=notify units), READY=1 once the
// server listens, STATUS=<client state> as clients come and go, STOPPING=1 on shutdown. One datagram per
// message through the addon (Node has no UNIX datagram sockets); never blocking, never throwing: a failed
// notification is logged once and the server goes on.
import * as native from 'vfio-user-native';
import type { DeviceLogger } from '../device.js';

/** systemd readiness (sd_notify over $NOTIFY_SOCKET): READY=1, STATUS=, STOPPING=1; never blocks or throws. */
export class SystemdNotifier {
  readonly socket: string | undefined;
  private warned = false;
  /** Datagrams sent (tests). */
  sent = 0;

  constructor(
    env: NodeJS.ProcessEnv,
    private readonly log: DeviceLogger,
  ) {
    const s = env.NOTIFY_SOCKET;
    // systemd sets an absolute path or an abstract name ('@...'); anything else is not a notify socket.
    this.socket = s && (s.startsWith('/') || s.startsWith('@')) ? s : undefined;
    if (s && !this.socket) log.warn({ NOTIFY_SOCKET: s }, 'NOTIFY_SOCKET ignored: not a path or @name');
  }

  get enabled(): boolean {
    return this.socket !== undefined;
  }

  /** Sends `KEY=value` lines; values are single-line (newlines become spaces). */
  notify(fields: Record<string, string | number>): boolean {
    if (!this.socket) return false;
    const text = Object.entries(fields)
      .map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`)
      .join('\n');
    try {
      native.sendDatagram(this.socket, text);
      this.sent++;
      return true;
    } catch (err) {
      if (!this.warned) {
        this.warned = true;
        this.log.warn({ err, socket: this.socket }, 'sd_notify failed (further failures are not logged)');
      }
      return false;
    }
  }

  ready(status: string): boolean {
    return this.notify({ READY: 1, STATUS: status, MAINPID: process.pid });
  }

  status(status: string): boolean {
    return this.notify({ STATUS: status });
  }

  stopping(status = 'shutting down'): boolean {
    return this.notify({ STOPPING: 1, STATUS: status });
  }
}
