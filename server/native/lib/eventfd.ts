// eventfds (interrupts to the client, doorbells from it) and readiness watching of any fd.
import { addon, type NativeWatcher } from './addon.js';

export interface EventfdOptions {
  /** EFD_NONBLOCK (default true). eventfdRead never blocks either way. */
  nonblock?: boolean;
  /** EFD_SEMAPHORE: each read returns 1 and decrements (default false). */
  semaphore?: boolean;
}

/** eventfd(initval, EFD_CLOEXEC | ...). */
export function eventfd(initval = 0, opts: EventfdOptions = {}): number {
  return addon.eventfd(initval, opts.nonblock ?? true, opts.semaphore ?? false);
}

/** Adds `value` (default 1n) to the counter: how an interrupt is signalled. */
export function eventfdWrite(fd: number, value: bigint = 1n): void {
  addon.eventfdWrite(fd, value);
}

/** Reads and resets the counter (or takes 1 with EFD_SEMAPHORE). 0n when nothing is pending. Never blocks. */
export function eventfdRead(fd: number): bigint {
  return addon.eventfdRead(fd);
}

/**
 * Calls onReadable whenever `fd` is readable (level-triggered: read/drain it in the callback, e.g. eventfdRead,
 * or it fires again). Does not own the fd: close() the watcher before closing the fd. One watcher per fd per
 * thread (a second one gets EEXIST). libuv makes the fd non-blocking. On a poll error the watcher stops and
 * onReadable receives the Error. Never read an eventfd through node:fs (a blocking read holds a thread).
 */
export class FdWatcher {
  readonly #n: NativeWatcher;

  constructor(fd: number, onReadable: (err?: Error) => void) {
    this.#n = new addon.NativeWatcher(fd, onReadable);
  }

  /** Stops watching. Idempotent. */
  close(): void {
    this.#n.close();
  }
}
