// One client at a time per device socket.
//
// The device has a single DMA address space and IRQ state, so only one client can be served. A second
// connection is parked, unread and unstarted (its VERSION waits in the kernel socket buffer; the client sees no
// reply), until the current client leaves; then it becomes active. Parked connections beyond `maxWaiting`
// (8 by default) are closed at once, with a log line.
//
// Why queue instead of refusing: a VMM that reconnects quickly (while its old connection is still being torn
// down) gets in without a retry loop, and a second client never disturbs the first (LIFE-03; libvfio-user
// leaves extra clients in the kernel's listen backlog, to the same effect). A parked client that gave up is
// noticed when its turn comes: its buffered bytes, then EOF.

import type * as native from 'vfio-user-native';

export type GateDecision = 'active' | 'queued' | 'refused';

export class ClientGate {
  private active = false;
  private readonly waiting: native.Connection[] = [];

  constructor(readonly maxWaiting = 8) {}

  get isActive(): boolean {
    return this.active;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  /** A new connection: serve it now, park it, or (queue full) close it. */
  admit(conn: native.Connection): GateDecision {
    if (!this.active) {
      this.active = true;
      return 'active';
    }
    if (this.waiting.length >= this.maxWaiting) {
      conn.close();
      return 'refused';
    }
    this.waiting.push(conn);
    return 'queued';
  }

  /** The active client left: returns the next one to serve (now active), if any. */
  release(): native.Connection | undefined {
    const next = this.waiting.shift();
    this.active = next !== undefined;
    return next;
  }

  /** Hand-over (server/src/handover/): the parked connections, oldest first. */
  get parked(): readonly native.Connection[] {
    return this.waiting;
  }

  /** Closes every parked connection (shutdown). */
  closeWaiting(): void {
    for (const c of this.waiting.splice(0)) c.close();
  }
}
