// Rate-limited logging of what a client can make us log over and over (failing NO_REPLY commands, interrupt fds
// that refuse signals, protocol violations): without a limit, 50,000 failing 16-byte messages became 11 MB of
// log lines. One line per kind per interval: the first occurrence is logged at once; later ones within the
// interval are only counted, and the count is logged (`repeated: N`) with the next occurrence after the interval,
// or by a timer at the end of the interval if none comes (unref'd: it never keeps the process alive).

import type { DeviceLogger } from './device.js';

export type LimitedLevel = 'debug' | 'info' | 'warn' | 'error';

interface Kind {
  /** When the current interval started (ms). */
  since: number;
  /** Occurrences not logged in the current interval. */
  suppressed: number;
  last: { level: LimitedLevel; obj: object; msg: string } | undefined;
  timer: NodeJS.Timeout | undefined;
}

/** Default interval of a RateLimitedLog (ms). */
export const DEFAULT_LOG_INTERVAL_MS = 5000;

export class RateLimitedLog {
  private readonly kinds = new Map<string, Kind>();
  /** Lines suppressed so far, over every kind (stats, tests). */
  suppressedTotal = 0;

  constructor(
    private readonly log: DeviceLogger,
    readonly intervalMs = DEFAULT_LOG_INTERVAL_MS,
    /** Bound on distinct kinds tracked (a kind is a fixed string chosen by our code, not by the client). */
    private readonly maxKinds = 256,
  ) {}

  /** Logs `msg` at `level` unless `kind` was logged less than an interval ago (then it is counted). */
  at(level: LimitedLevel, kind: string, obj: object, msg: string): void {
    const now = Date.now();
    let k = this.kinds.get(kind);
    if (!k) {
      if (this.kinds.size >= this.maxKinds) this.flushAll();
      k = { since: now, suppressed: 0, last: undefined, timer: undefined };
      this.kinds.set(kind, k);
      this.log[level](obj, msg);
      return;
    }
    if (now - k.since < this.intervalMs) {
      k.suppressed++;
      this.suppressedTotal++;
      k.last = { level, obj, msg };
      k.timer ??= setTimeout(() => this.flush(kind), this.intervalMs - (now - k!.since)).unref();
      return;
    }
    const repeated = k.suppressed;
    this.reset(k, now);
    this.log[level](repeated ? { ...obj, repeated } : obj, msg);
  }

  warn(kind: string, obj: object, msg: string): void {
    this.at('warn', kind, obj, msg);
  }

  info(kind: string, obj: object, msg: string): void {
    this.at('info', kind, obj, msg);
  }

  debug(kind: string, obj: object, msg: string): void {
    this.at('debug', kind, obj, msg);
  }

  private reset(k: Kind, now: number): void {
    if (k.timer) clearTimeout(k.timer);
    k.timer = undefined;
    k.since = now;
    k.suppressed = 0;
    k.last = undefined;
  }

  /** Logs the count of what `kind` suppressed in its interval (if anything) and starts a new interval. */
  private flush(kind: string): void {
    const k = this.kinds.get(kind);
    if (!k) return;
    const last = k.last;
    const repeated = k.suppressed;
    this.reset(k, Date.now());
    if (last && repeated) this.log[last.level]({ ...last.obj, repeated }, `${last.msg} (repeated)`);
  }

  /** Logs every pending count and forgets every kind (session end, shutdown). */
  flushAll(): void {
    for (const kind of [...this.kinds.keys()]) this.flush(kind);
    for (const k of this.kinds.values()) if (k.timer) clearTimeout(k.timer);
    this.kinds.clear();
  }
}
