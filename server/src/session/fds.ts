// The fds that arrived with one message. Every fd has exactly one owner: a handler that keeps an fd `take`s it;
// whatever is left when the message is done (success, error reply, NO_REPLY, exception, disconnect) is closed.

import * as native from 'vfio-user-native';

export class FdBag {
  private readonly fds: (number | undefined)[];

  constructor(fds: readonly number[], copy = true) {
    // A copy (the caller's array stays the caller's); slice() rather than a spread, which goes through the
    // iterator protocol for every message.
    this.fds = copy ? fds.slice() : (fds as number[]);
  }

  /**
   * The bag of a message without fds, shared (no bag per DMA_UNMAP): it holds nothing to take or close, and its
   * array is frozen, so adopt() on it throws rather than let one message's fd reach another's bag.
   */
  static readonly NONE: FdBag = new FdBag(Object.freeze([]) as unknown as number[], false);

  /** A bag that takes `fds` itself, not a copy: for an array nobody else holds (the addon's, per message). */
  static taking(fds: number[]): FdBag {
    return new FdBag(fds, false);
  }

  get count(): number {
    return this.fds.length;
  }

  /** Hands an fd of ours to the bag: it is closed with the rest when the message is done. */
  adopt(fd: number): void {
    this.fds.push(fd);
  }

  /** Takes fd `i` (the caller now owns it). */
  take(i: number): number {
    const fd = this.fds[i];
    if (fd === undefined) throw new Error(`fd ${i} already taken or absent`);
    this.fds[i] = undefined;
    return fd;
  }

  /** Takes every fd still here. */
  takeAll(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.fds.length; i++) {
      const fd = this.fds[i];
      if (fd !== undefined) out.push(fd);
      this.fds[i] = undefined;
    }
    return out;
  }

  /** The fds still here, without taking them. */
  peek(): number[] {
    return this.fds.filter((fd): fd is number => fd !== undefined);
  }

  /** Closes every fd not taken. */
  closeRest(): void {
    native.closeFdsQuietly(this.takeAll());
  }
}
