// Shared memory behind mmap-able BAR areas (doorbells, rings): a memfd the client maps MAP_SHARED, and the
// same pages mapped into this process so the device model sees guest stores without a message.
//
// Kept behind an interface so the PCI model stays testable and the native addon is loaded only by devices
// that use sparse areas.

/** A memfd mapped into this process. The owner closes it (unmaps, then closes the fd). */
export interface SharedMemory {
  /** The memfd; the engine dups it into GET_REGION_INFO replies, this object keeps ownership. */
  readonly fd: number;
  /** The mapping, `size` bytes. Empty after close(). */
  readonly bytes: Uint8Array;
  close(): void;
}

/** Creates a zero-filled shared memory of `size` bytes (a page multiple). */
export type SharedMemoryFactory = (name: string, size: number) => SharedMemory;
