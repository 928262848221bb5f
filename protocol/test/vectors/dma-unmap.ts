// DMA_UNMAP vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

const bytes = (...b: number[]) => new Uint8Array(b);

export const vectors: Vector[] = [
  {
    name: 'DMA_UNMAP request: q35 RAM [0, 0x20000000)',
    command: Command.DMA_UNMAP,
    kind: 'request',
    id: 7,
    hex: '0700 0300 28000000 00000000 00000000 | 18000000 00000000 | 0000000000000000 | 0000002000000000',
    decoded: { argsz: 24, flags: 0, address: 0n, size: 0x20000000n },
  },
  {
    name: 'DMA_UNMAP request: FLAG_ALL',
    command: Command.DMA_UNMAP,
    kind: 'request',
    id: 8,
    hex: '0800 0300 28000000 00000000 00000000 | 18000000 02000000 | 0000000000000000 | 0000000000000000',
    decoded: { argsz: 24, flags: 2, address: 0n, size: 0n },
  },
  {
    name: 'DMA_UNMAP request: legacy GET_DIRTY_BITMAP, 8-byte bitmap',
    command: Command.DMA_UNMAP,
    kind: 'request',
    id: 9,
    hex:
      '0900 0300 38000000 00000000 00000000 | 30000000 01000000 | 0000100000000000 | 0000040000000000 |' +
      '0010000000000000 | 0800000000000000',
    decoded: {
      argsz: 48,
      flags: 1,
      address: 0x100000n,
      size: 0x40000n,
      bitmap: { pgsize: 0x1000n, size: 8n },
    },
  },
  {
    name: 'DMA_UNMAP reply: the 24-byte echo',
    command: Command.DMA_UNMAP,
    kind: 'reply',
    id: 7,
    hex: '0700 0300 28000000 01000000 00000000 | 18000000 00000000 | 0000000000000000 | 0000002000000000',
    decoded: { argsz: 24, flags: 0, address: 0n, size: 0x20000000n },
  },
  {
    name: 'DMA_UNMAP reply: header only (QEMU accepts it)',
    command: Command.DMA_UNMAP,
    kind: 'reply',
    id: 7,
    hex: '0700 0300 10000000 01000000 00000000',
    decoded: {},
  },
  {
    name: 'DMA_UNMAP reply: echo with dirty bitmap data',
    command: Command.DMA_UNMAP,
    kind: 'reply',
    id: 9,
    hex:
      '0900 0300 40000000 01000000 00000000 | 30000000 01000000 | 0000100000000000 | 0000040000000000 |' +
      '0010000000000000 | 0800000000000000 | 0100000000000080',
    decoded: {
      argsz: 48,
      flags: 1,
      address: 0x100000n,
      size: 0x40000n,
      bitmap: { pgsize: 0x1000n, size: 8n, data: bytes(1, 0, 0, 0, 0, 0, 0, 0x80) },
    },
  },
];
