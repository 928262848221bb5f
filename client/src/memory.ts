// Guest memory the client owns: a memfd, mmapped into this process, that can be handed to the server with
// DMA_MAP (with its fd, so the server mmaps it, or without, so the server must use DMA_READ/DMA_WRITE messages
// that the client then serves from the same bytes). Tests read and write it to check what the device did.
import {
  addSeals,
  closeFd,
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  MAP_SHARED,
  memfdCreate,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from 'vfio-user-native';

/** Guest memory the client owns: a memfd mmapped into this process, to DMA_MAP with or without its fd. */
export class GuestMemory {
  /** The memfd (owned by this object until close()). */
  readonly fd: number;
  readonly size: number;
  readonly name: string;
  private ab: ArrayBuffer | undefined;
  private u8: Uint8Array;

  private constructor(name: string, fd: number, size: number, ab: ArrayBuffer) {
    this.name = name;
    this.fd = fd;
    this.size = size;
    this.ab = ab;
    this.u8 = new Uint8Array(ab);
  }

  /**
   * A zero-filled memfd of `size` bytes (a multiple of the page size is best), mapped read-write. Sealed against
   * shrinking and growing by default, as QEMU's memory-backend-memfd is (a server may then touch it directly;
   * `sealed: false` gives a file the client could truncate, which a server must guard against).
   */
  static create(size: number, name = 'vfio-user-guest', opts: { sealed?: boolean } = {}): GuestMemory {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`bad guest memory size ${size}`);
    const fd = memfdCreate(name, size);
    try {
      if (opts.sealed !== false) addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW);
      const ab = mmap(fd, 0n, size, PROT_READ | PROT_WRITE, MAP_SHARED);
      return new GuestMemory(name, fd, size, ab);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  get closed(): boolean {
    return this.ab === undefined;
  }

  /** The live bytes (a view of the mapping; empty after close()). */
  get bytes(): Uint8Array {
    return this.u8;
  }

  private check(offset: number, length: number): void {
    if (this.ab === undefined) throw new Error(`guest memory ${this.name} is closed`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new RangeError(`bad range ${offset}+${length}`);
    }
    if (offset + length > this.size) {
      throw new RangeError(`range ${offset}+${length} is outside guest memory of ${this.size} bytes`);
    }
  }

  /** A copy of `length` bytes at `offset`. */
  read(offset: number, length: number): Uint8Array {
    this.check(offset, length);
    return this.u8.slice(offset, offset + length);
  }

  write(offset: number, data: Uint8Array): void {
    this.check(offset, data.length);
    this.u8.set(data, offset);
  }

  fill(value: number, offset = 0, length = this.size - offset): void {
    this.check(offset, length);
    this.u8.fill(value, offset, offset + length);
  }

  /** Unmap and close the memfd. The server keeps whatever it mapped from its own fd copy. Idempotent. */
  close(): void {
    if (this.ab === undefined) return;
    const ab = this.ab;
    this.ab = undefined;
    this.u8 = new Uint8Array(0);
    try {
      munmap(ab);
    } finally {
      closeFd(this.fd);
    }
  }
}

/**
 * One DMA window as the client sees it: IOVA range -> bytes of a GuestMemory (or nothing, for maps made
 * without backing, which the client cannot serve: the server's DMA there gets EFAULT).
 */
export interface DmaWindow {
  address: bigint;
  size: bigint;
  flags: number;
  /** Whether DMA_MAP carried an fd. */
  withFd: boolean;
  memory?: GuestMemory;
  /** Offset of `address` within `memory`. */
  memoryOffset: number;
}

/**
 * The client's own view of its DMA maps: what it told the server, so that it can answer the server's DMA_READ and
 * DMA_WRITE exactly as the guest's memory would (EFAULT outside every map). Kept sorted by address.
 */
export class DmaWindows {
  private list: DmaWindow[] = [];

  get size(): number {
    return this.list.length;
  }

  all(): readonly DmaWindow[] {
    return this.list;
  }

  private indexOf(address: bigint): number {
    // First window whose end is above address.
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const w = this.list[mid]!;
      if (w.address + w.size <= address) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  add(w: DmaWindow): void {
    const i = this.indexOf(w.address);
    this.list.splice(i, 0, w);
  }

  /** Remove windows wholly inside [address, address+size); returns them. */
  removeRange(address: bigint, size: bigint): DmaWindow[] {
    const end = address + size;
    const kept: DmaWindow[] = [];
    const gone: DmaWindow[] = [];
    for (const w of this.list) {
      if (w.address >= address && w.address + w.size <= end) gone.push(w);
      else kept.push(w);
    }
    this.list = kept;
    return gone;
  }

  clear(): DmaWindow[] {
    const gone = this.list;
    this.list = [];
    return gone;
  }

  /**
   * The pieces of [address, address+count) as (window, offset-in-window, length), or undefined when some byte is
   * outside every window (adjacent windows may be crossed, as guest RAM sections can be).
   */
  resolve(address: bigint, count: number): { w: DmaWindow; off: number; len: number }[] | undefined {
    const out: { w: DmaWindow; off: number; len: number }[] = [];
    let cur = address;
    let left = BigInt(count);
    let i = this.indexOf(address);
    while (left > 0n) {
      const w = this.list[i];
      if (!w || w.address > cur) return undefined;
      const off = cur - w.address;
      const avail = w.size - off;
      const len = avail < left ? avail : left;
      out.push({ w, off: Number(off), len: Number(len) });
      cur += len;
      left -= len;
      i++;
    }
    return out;
  }
}
