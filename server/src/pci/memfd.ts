// The default SharedMemory: a sealed memfd mapped MAP_SHARED into this process (vfio-user-native).
//
// The client gets a duplicate of the fd; sealing it against shrinking and growing means a client that
// ftruncate()s it cannot make our own mapping SIGBUS.
import {
  addSeals,
  closeFd,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  MAP_SHARED,
  memfdCreate,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from 'vfio-user-native';
import type { SharedMemory, SharedMemoryFactory } from './shared-memory.js';

/**
 * The default SharedMemoryFactory: a memfd sealed against shrinking and growing, mapped MAP_SHARED here and handed
 * to the client to mmap.
 */
export const memfdSharedMemory: SharedMemoryFactory = (name: string, size: number): SharedMemory => {
  const fd = memfdCreate(name, size);
  let ab: ArrayBuffer;
  try {
    addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    ab = mmap(fd, 0n, size, PROT_READ | PROT_WRITE, MAP_SHARED);
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  let bytes = new Uint8Array(ab);
  let open = true;
  return {
    fd,
    get bytes() {
      return bytes;
    },
    close() {
      if (!open) return;
      open = false;
      bytes = new Uint8Array(0);
      try {
        munmap(ab);
      } finally {
        closeFd(fd);
      }
    },
  };
};
