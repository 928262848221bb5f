// DMA_READ vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

const bytes = (...b: number[]) => new Uint8Array(b);

export const vectors: Vector[] = [
  {
    name: 'DMA_READ request: 16 bytes at 0x1000',
    command: Command.DMA_READ,
    kind: 'request',
    id: 0x8000,
    hex: '0080 0b00 20000000 00000000 00000000 | 0010000000000000 | 1000000000000000',
    decoded: { address: 0x1000n, count: 16n },
  },
  {
    name: 'DMA_READ reply: 16 bytes of data at +16',
    command: Command.DMA_READ,
    kind: 'reply',
    id: 0x8000,
    hex:
      '0080 0b00 30000000 01000000 00000000 | 0010000000000000 | 1000000000000000 |' +
      '000102030405060708090a0b0c0d0e0f',
    decoded: { address: 0x1000n, data: bytes(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) },
  },
];
