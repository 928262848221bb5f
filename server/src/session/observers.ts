// What operations tooling sees of a session without touching its logic: every message as it crossed the socket
// (the wire recorder and `trace start`), and every finished client request with its errno and latency (metrics,
// the failure summaries). Observers are added and removed at run time; the session checks one boolean per
// message when none is installed.

/** One observer; every method is optional. Must not throw (a throw is caught and the observer removed). */
export interface SessionObserver {
  /**
   * A message as it crossed the socket: `fromServer` = we sent it, `twin` = on the twin socket, `fds` = how many
   * fds came or went with it. `bytes` is only valid during the call (copy to keep).
   */
  wire?(fromServer: boolean, twin: boolean, bytes: Uint8Array, fds: number): void;
  /** A client request was answered (or, NO_REPLY, done): errno 0 = success; seconds from arrival to reply. */
  request?(command: string, errno: number, seconds: number): void;
  /** A message the stream could not be trusted after (the session closes): its errno. */
  violation?(errno: number): void;
}

/** The observers of a session (wire recorder, tracing, metrics), added and removed at run time. */
export class Observers {
  private list: SessionObserver[] = [];
  private readonly watchers = new Set<() => void>();
  /** Whether any observer wants wire bytes / request completions (read per message). */
  wireOn = false;
  requestOn = false;
  /** Called with an observer that threw (it has been removed). */
  onError: ((err: unknown, o: SessionObserver) => void) | undefined;

  add(o: SessionObserver): () => void {
    this.list.push(o);
    this.recompute();
    return () => this.remove(o);
  }

  remove(o: SessionObserver): void {
    this.list = this.list.filter((x) => x !== o);
    this.recompute();
  }

  /** Calls `fn` after every add or remove (a session answering reads without JS stops doing so); returns the undo. */
  watch(fn: () => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  /**
   * Tells the watchers that something else a session's fast paths depend on changed (the control socket's
   * log-level: trace logging wants every message in JS).
   */
  changed(): void {
    for (const fn of this.watchers) fn();
  }

  private recompute(): void {
    this.wireOn = this.list.some((o) => o.wire);
    this.requestOn = this.list.some((o) => o.request || o.violation);
    this.changed();
  }

  private each(fn: (o: SessionObserver) => void): void {
    for (const o of this.list) {
      try {
        fn(o);
      } catch (err) {
        this.remove(o);
        this.onError?.(err, o);
      }
    }
  }

  wire(fromServer: boolean, twin: boolean, bytes: Uint8Array, fds: number): void {
    this.each((o) => o.wire?.(fromServer, twin, bytes, fds));
  }

  request(command: string, errno: number, seconds: number): void {
    this.each((o) => o.request?.(command, errno, seconds));
  }

  violation(errno: number): void {
    this.each((o) => o.violation?.(errno));
  }
}
