// Interrupt state of one device: DEVICE_SET_IRQS semantics, the eventfds the client handed over, masking and
// pending bits, and the IrqSink that device models trigger.
//
// Per IRQ index (INTx 0, MSI 1, MSI-X 2, ERR 3, REQ 4; vector counts from device.irqInfo) and per vector:
// - a trigger eventfd (EVENTFD|TRIGGER assigns, the same with 0 fds de-assigns, re-assigning closes the old fd,
//   NONE|TRIGGER with count 0 disables the whole index);
// - a mask bit and a pending bit: a trigger on a masked vector sets pending instead of signalling, and the
//   unmask fires it. Indexes whose IrqInfo has AUTOMASKED (INTx, flags 0x7) mask themselves on every signal,
//   like vfio-pci's INTx: the client unmasks after the guest's EOI (NONE|UNMASK under TCG);
// - optional mask/unmask *input* eventfds (EVENTFD|MASK / EVENTFD|UNMASK). This is KVM's INTx resampler: KVM
//   signals the fd when the guest EOIs, and each signal means "unmask" (kernel VFIO semantics, which QEMU relies
//   on). The fd is watched with an FdWatcher, never read from the event loop.
//
// Hostile fds (docs/hardening.md): a trigger fd is made non-blocking when it arrives and every signal goes
// through the addon's signalFd, which never blocks (a full eventfd counter, or a pipe nobody reads, answers
// EAGAIN): the failure is counted (`stats.failed`) and logged at most once per interval, the vector stays
// assigned. A mask/unmask fd that hangs up or errors (a pipe whose write end was closed) stops its watcher: the
// fd is closed, counted (`stats.deadFds`) and reported once, instead of waking the loop on every turn.
//
// Validation follows the kernel and libvfio-user (the IRQS cases of docs/conformance-index.md): exactly one DATA and one ACTION bit,
// index < num_irqs, 0 < count and start+count <= vectors (count 0 only as NONE|TRIGGER with start 0, meaning
// "disable"), only TRIGGER on ERR/REQ, BOOL data of exactly `count` bytes, no fds unless DATA_EVENTFD, and then
// either `count` fds or none. Every failure is EINVAL and leaves the state untouched; the caller keeps (and
// closes) the fds of a failed request. A successful request takes ownership of all of them.

import * as native from 'vfio-user-native';
import {
  SET_IRQS_ACTION_TYPE_MASK as ACTION_MASK,
  SET_IRQS_DATA_TYPE_MASK as DATA_MASK,
  Errno,
  ErrnoError,
  IrqIndex,
  IrqInfoFlags,
  SetIrqsFlags,
} from 'vfio-user-protocol';
import type { DeviceLogger, IrqSink, VfioUserDevice } from '../device.js';
import { RateLimitedLog } from '../log-limit.js';

/** One DEVICE_SET_IRQS request as the IrqController takes it: flags, index, vector range and the DATA_BOOL payload. */
export interface SetIrqsParams {
  flags: number;
  index: number;
  start: number;
  count: number;
  /** DATA_BOOL payload (`count` bytes). */
  data?: Uint8Array;
}

/** A refused SET_IRQS; `errno` goes into the error reply. */
export class IrqError extends ErrnoError {
  constructor(errno: number, message: string) {
    super(errno, message);
    this.name = 'IrqError';
  }
}

interface Watch {
  fd: number;
  watcher: native.FdWatcher;
}

interface Vector {
  trigger: number; // -1: none
  masked: boolean;
  pending: boolean;
  onMask?: Watch;
  onUnmask?: Watch;
}

/** One vector as a hand-over carries it (fds: -1 = none). */
export interface IrqVectorState {
  index: number;
  vector: number;
  trigger: number;
  masked: boolean;
  pending: boolean;
  onMask: number;
  onUnmask: number;
}

/** Counters of an IrqController: interrupts signalled, pended while masked, dropped (no eventfd), failed, dead eventfds. */
export interface IrqStats {
  /** Signals written to eventfds. */
  signals: number;
  /** Triggers that became pending because the vector was masked. */
  pended: number;
  /** Triggers dropped because no eventfd was assigned. */
  dropped: number;
  /** Signals the client's fd refused (counter or pipe full, fd broken): counted, never waited for. */
  failed: number;
  /** Mask/unmask fds dropped because they hung up or failed. */
  deadFds: number;
}

const silent: DeviceLogger = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/**
 * The interrupt state of one device: DEVICE_SET_IRQS semantics, the client's eventfds, mask and pending bits, and
 * the IrqSink device models trigger.
 */
export class IrqController implements IrqSink {
  private readonly indexes = new Map<number, Vector[]>();
  readonly stats: IrqStats = { signals: 0, pended: 0, dropped: 0, failed: 0, deadFds: 0 };
  private readonly limited: RateLimitedLog;

  constructor(
    private readonly device: VfioUserDevice,
    private readonly log: DeviceLogger = silent,
  ) {
    this.limited = new RateLimitedLog(log);
  }

  private vectors(index: number, create: boolean): Vector[] | undefined {
    let v = this.indexes.get(index);
    if (!v && create) {
      v = [];
      this.indexes.set(index, v);
    }
    return v;
  }

  private vector(index: number, i: number): Vector {
    const vs = this.vectors(index, true)!;
    while (vs.length <= i) vs.push({ trigger: -1, masked: false, pending: false });
    return vs[i]!;
  }

  /** Validates a SET_IRQS without changing anything; throws IrqError. */
  validate(p: SetIrqsParams, fdCount: number): void {
    const { flags, index, start, count } = p;
    if (!Number.isInteger(index) || index < 0 || index >= this.device.numIrqs) {
      throw new IrqError(Errno.EINVAL, `IRQ index ${index} out of range`);
    }
    if ((flags & ~(DATA_MASK | ACTION_MASK)) !== 0)
      throw new IrqError(Errno.EINVAL, `unknown SET_IRQS flags 0x${flags.toString(16)}`);
    const data = flags & DATA_MASK;
    const action = flags & ACTION_MASK;
    if (
      data !== SetIrqsFlags.DATA_NONE &&
      data !== SetIrqsFlags.DATA_BOOL &&
      data !== SetIrqsFlags.DATA_EVENTFD
    ) {
      throw new IrqError(Errno.EINVAL, 'SET_IRQS needs exactly one DATA type');
    }
    if (
      action !== SetIrqsFlags.ACTION_MASK &&
      action !== SetIrqsFlags.ACTION_UNMASK &&
      action !== SetIrqsFlags.ACTION_TRIGGER
    ) {
      throw new IrqError(Errno.EINVAL, 'SET_IRQS needs exactly one ACTION type');
    }
    if ((index === IrqIndex.ERR || index === IrqIndex.REQ) && action !== SetIrqsFlags.ACTION_TRIGGER) {
      throw new IrqError(Errno.EINVAL, 'only TRIGGER is valid on ERR/REQ');
    }
    const n = this.device.irqInfo(index).count;
    if (count === 0) {
      if (start !== 0 || data !== SetIrqsFlags.DATA_NONE || action !== SetIrqsFlags.ACTION_TRIGGER) {
        throw new IrqError(Errno.EINVAL, 'count 0 is only valid as NONE|TRIGGER with start 0 (disable)');
      }
    } else if (start >= n || start + count > n) {
      throw new IrqError(Errno.EINVAL, `vectors [${start}, +${count}) outside the ${n} of index ${index}`);
    }
    if (data === SetIrqsFlags.DATA_BOOL && (p.data?.length ?? 0) !== count) {
      throw new IrqError(Errno.EINVAL, `DATA_BOOL needs ${count} bytes, got ${p.data?.length ?? 0}`);
    }
    if (data !== SetIrqsFlags.DATA_EVENTFD && fdCount !== 0) {
      throw new IrqError(Errno.EINVAL, `${fdCount} fds with a non-EVENTFD SET_IRQS`);
    }
    if (data === SetIrqsFlags.DATA_EVENTFD && fdCount !== 0 && fdCount !== count) {
      throw new IrqError(
        Errno.EINVAL,
        `DATA_EVENTFD with count ${count} needs ${count} fds or none, got ${fdCount}`,
      );
    }
  }

  /**
   * DEVICE_SET_IRQS. Throws IrqError (fds untouched, the caller closes them); on success takes every fd in `fds`.
   */
  setIrqs(p: SetIrqsParams, fds: readonly number[]): void {
    this.validate(p, fds.length);
    const { flags, index, start, count } = p;
    const data = flags & DATA_MASK;
    const action = flags & ACTION_MASK;

    if (count === 0) {
      this.disableIndex(index);
    } else if (data === SetIrqsFlags.DATA_EVENTFD) {
      for (let i = 0; i < count; i++) {
        const v = this.vector(index, start + i);
        const fd = fds.length ? fds[i]! : -1;
        if (action === SetIrqsFlags.ACTION_TRIGGER) {
          // Signals must never block the loop (the client shares the file description: signalFd re-checks).
          if (fd >= 0) setNonBlockingQuietly(fd);
          native.closeFdsQuietly([v.trigger]); // -1: none
          v.trigger = fd;
        } else if (action === SetIrqsFlags.ACTION_UNMASK) {
          this.setWatch(v, 'onUnmask', fd, () => this.unmask(index, start + i));
        } else {
          this.setWatch(v, 'onMask', fd, () => this.mask(index, start + i));
        }
      }
    } else {
      for (let i = 0; i < count; i++) {
        if (data === SetIrqsFlags.DATA_BOOL && p.data![i] === 0) continue;
        const vec = start + i;
        if (action === SetIrqsFlags.ACTION_TRIGGER) this.trigger(index, vec);
        else if (action === SetIrqsFlags.ACTION_MASK) this.vector(index, vec).masked = true;
        else this.unmask(index, vec, false);
      }
    }
    this.log.debug({ index, start, count, flags, fds: fds.length }, 'SET_IRQS');
    this.notify(index);
  }

  private setWatch(v: Vector, slot: 'onMask' | 'onUnmask', fd: number, onSignal: () => void): void {
    const old = v[slot];
    if (old) {
      old.watcher.close();
      native.closeFdsQuietly([old.fd]);
      v[slot] = undefined;
    }
    if (fd < 0) return;
    const dead = (err: unknown) => {
      // Hung up or broken: the watcher has stopped (or is stopped here); drop the fd so nothing spins on it.
      watcher.close();
      if (v[slot]?.watcher === watcher) {
        native.closeFdsQuietly([fd]);
        v[slot] = undefined;
      }
      this.stats.deadFds++;
      this.limited.warn(
        'irq-dead-fd',
        { err: (err as Error)?.message ?? String(err), slot },
        'IRQ mask/unmask fd is dead (hung up or failed): dropped',
      );
    };
    const watcher = new native.FdWatcher(fd, (err) => {
      if (err) {
        dead(err);
        return;
      }
      // Level-triggered: drain the counter (several signals since the last wakeup count as one unmask).
      let n: bigint;
      try {
        n = native.eventfdRead(fd);
      } catch (e) {
        dead(e);
        return;
      }
      if (n === 0n) return;
      try {
        onSignal();
      } catch (e) {
        this.log.error({ err: e }, 'IRQ mask/unmask eventfd handler failed');
      }
    });
    v[slot] = { fd, watcher };
  }

  private notify(index: number): void {
    try {
      this.device.irqStateChanged?.(index);
    } catch (err) {
      this.log.error({ err, index }, 'device irqStateChanged threw');
    }
  }

  /** Masks a vector (mask eventfd signal, or device-internal use). */
  mask(index: number, vector: number): void {
    this.vector(index, vector).masked = true;
    this.notify(index);
  }

  /** Unmasks a vector and fires it if it was pending. */
  unmask(index: number, vector: number, notify = true): void {
    const v = this.vector(index, vector);
    v.masked = false;
    if (v.pending) {
      v.pending = false;
      this.trigger(index, vector);
    }
    if (notify) this.notify(index);
  }

  private disableIndex(index: number): void {
    const vs = this.indexes.get(index);
    if (!vs) return;
    for (const v of vs) this.clearVector(v);
    this.indexes.delete(index);
  }

  private clearVector(v: Vector): void {
    native.closeFdsQuietly([v.trigger]); // -1: none
    v.trigger = -1;
    for (const slot of ['onMask', 'onUnmask'] as const) {
      const w = v[slot];
      if (w) {
        w.watcher.close();
        native.closeFdsQuietly([w.fd]);
        v[slot] = undefined;
      }
    }
    v.masked = false;
    v.pending = false;
  }

  // IrqSink ------------------------------------------------------------------------------------------------

  trigger(index: number, vector: number): boolean {
    const v = this.indexes.get(index)?.[vector];
    if (!v || v.trigger < 0) {
      this.stats.dropped++;
      return false;
    }
    if (v.masked) {
      v.pending = true;
      this.stats.pended++;
      return false;
    }
    const errno = native.signalFd(v.trigger);
    if (errno !== 0) {
      this.stats.failed++;
      this.limited.warn(
        `irq-signal-${errno}`,
        { index, vector, errno },
        errno === Errno.EAGAIN
          ? 'interrupt not signalled: the client does not drain its eventfd/pipe'
          : 'interrupt not signalled: the client fd refused the write',
      );
      return false;
    }
    this.stats.signals++;
    if (this.device.irqInfo(index).flags & IrqInfoFlags.AUTOMASKED) v.masked = true;
    return true;
  }

  isEnabled(index: number, vector: number): boolean {
    const v = this.indexes.get(index)?.[vector];
    return !!v && v.trigger >= 0;
  }

  /** Whether a vector is masked / pending (for device models and tests). */
  state(index: number, vector: number): { enabled: boolean; masked: boolean; pending: boolean } {
    const v = this.indexes.get(index)?.[vector];
    return { enabled: !!v && v.trigger >= 0, masked: !!v?.masked, pending: !!v?.pending };
  }

  // ---- hand-over hooks (server/src/handover/) ------------------------------------------------------------------

  /** Every vector with state, its fds borrowed (-1: none): what a hand-over carries to the next process. */
  exportVectors(): IrqVectorState[] {
    const out: IrqVectorState[] = [];
    for (const [index, vs] of this.indexes) {
      vs.forEach((v, vector) => {
        out.push({
          index,
          vector,
          trigger: v.trigger,
          masked: v.masked,
          pending: v.pending,
          onMask: v.onMask?.fd ?? -1,
          onUnmask: v.onUnmask?.fd ?? -1,
        });
      });
    }
    return out;
  }

  /** Installs exported vectors (on an empty controller); takes ownership of their fds. */
  importVectors(list: readonly IrqVectorState[]): void {
    for (const s of list) {
      const v = this.vector(s.index, s.vector);
      v.trigger = s.trigger;
      v.masked = s.masked;
      v.pending = s.pending;
      if (s.onMask >= 0) this.setWatch(v, 'onMask', s.onMask, () => this.mask(s.index, s.vector));
      if (s.onUnmask >= 0) this.setWatch(v, 'onUnmask', s.onUnmask, () => this.unmask(s.index, s.vector));
    }
  }

  /**
   * Every vector the client touched, by IRQ index (the control socket's `irqs`): whether it has an eventfd, and
   * its masked/pending bits.
   */
  snapshot(): { index: number; vector: number; eventfd: boolean; masked: boolean; pending: boolean }[] {
    const out: { index: number; vector: number; eventfd: boolean; masked: boolean; pending: boolean }[] = [];
    for (const [index, vs] of [...this.indexes.entries()].sort((a, b) => a[0] - b[0])) {
      vs.forEach((v, vector) => {
        if (v) out.push({ index, vector, eventfd: v.trigger >= 0, masked: v.masked, pending: v.pending });
      });
    }
    return out;
  }

  /** Closes every eventfd and watcher and forgets all state (client disconnect). */
  reset(): void {
    for (const vs of this.indexes.values()) for (const v of vs) this.clearVector(v);
    this.indexes.clear();
    this.limited.flushAll();
  }
}

function setNonBlockingQuietly(fd: number): void {
  try {
    native.setNonBlocking(fd);
  } catch {
    // not an fd we can change (signalFd will report its errno on use)
  }
}
