// Interrupt eventfds on the client side: the client creates an eventfd per vector, hands it to the server with
// SET_IRQS (DATA_EVENTFD), and watches it; every time the server signals it, the counter read from the eventfd
// is added to that vector's count. Tests wait on those counts to see interrupts arrive (or not, while masked).
import { closeFd, eventfd, eventfdRead, FdWatcher } from 'vfio-user-native';

/**
 * An eventfd handed to the server for one interrupt vector and watched by the client: counts the signals; wait()
 * resolves on the next.
 */
export class IrqEventfd {
  readonly index: number;
  readonly vector: number;
  readonly fd: number;
  /** Total of the eventfd counter values read so far (= how many times the server signalled, in practice). */
  count = 0;
  private watcher: FdWatcher | undefined;
  private waiters: { min: number; resolve(): void; reject(e: Error): void; timer: NodeJS.Timeout }[] = [];
  private closed = false;

  constructor(index: number, vector: number) {
    this.index = index;
    this.vector = vector;
    this.fd = eventfd();
    try {
      this.watcher = new FdWatcher(this.fd, () => this.drain());
    } catch (e) {
      closeFd(this.fd);
      throw e;
    }
  }

  private drain(): void {
    if (this.closed) return;
    let n: number | bigint | null | undefined;
    try {
      n = eventfdRead(this.fd);
    } catch {
      return; // EAGAIN: another reader got there first
    }
    if (n === null || n === undefined) return;
    this.count += Number(n);
    this.waiters = this.waiters.filter((w) => {
      if (this.count < w.min) return true;
      clearTimeout(w.timer);
      w.resolve();
      return false;
    });
  }

  /** Resolves once `count >= min` (default: one more than now); rejects after timeoutMs. */
  wait(min = this.count + 1, timeoutMs = 2000): Promise<number> {
    if (this.count >= min) return Promise.resolve(this.count);
    if (this.closed) return Promise.reject(new Error(`irq ${this.index}/${this.vector} eventfd is closed`));
    return new Promise<number>((resolve, reject) => {
      const w = {
        min,
        resolve: () => resolve(this.count),
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(
            new Error(`irq ${this.index}/${this.vector}: count ${this.count} < ${min} after ${timeoutMs} ms`),
          );
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.watcher?.close();
    } finally {
      this.watcher = undefined;
      closeFd(this.fd);
      for (const w of this.waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new Error(`irq ${this.index}/${this.vector} eventfd closed`));
      }
    }
  }
}

/** The eventfds the client created, by IRQ index and vector. */
export class IrqEventfds {
  private readonly byIndex = new Map<number, Map<number, IrqEventfd>>();

  get(index: number, vector: number): IrqEventfd | undefined {
    return this.byIndex.get(index)?.get(vector);
  }

  /** All eventfds of an index, by vector. */
  of(index: number): IrqEventfd[] {
    return [...(this.byIndex.get(index)?.values() ?? [])].sort((a, b) => a.vector - b.vector);
  }

  /** Create (replacing and closing any previous one) the eventfd of a vector. */
  create(index: number, vector: number): IrqEventfd {
    const e = new IrqEventfd(index, vector);
    this.adopt(e);
    return e;
  }

  /** Track an eventfd created elsewhere (replacing and closing any previous one on its vector). */
  adopt(e: IrqEventfd): void {
    this.release(e.index, e.vector);
    let m = this.byIndex.get(e.index);
    if (!m) {
      m = new Map();
      this.byIndex.set(e.index, m);
    }
    m.set(e.vector, e);
  }

  release(index: number, vector: number): void {
    const m = this.byIndex.get(index);
    const e = m?.get(vector);
    if (e) {
      m!.delete(vector);
      e.close();
    }
  }

  /** Close every eventfd of `index` (or of every index). */
  releaseAll(index?: number): void {
    for (const [i, m] of this.byIndex) {
      if (index !== undefined && i !== index) continue;
      for (const e of m.values()) e.close();
      m.clear();
    }
  }

  get openCount(): number {
    let n = 0;
    for (const m of this.byIndex.values()) n += m.size;
    return n;
  }
}
