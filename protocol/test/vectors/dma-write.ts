// DMA_WRITE vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

const bytes = (...b: number[]) => new Uint8Array(b);

export const vectors: Vector[] = [
  {
    name: 'DMA_WRITE request: 4 bytes to 0xffeeddc000',
    command: Command.DMA_WRITE,
    kind: 'request',
    id: 0x8001,
    hex: '0180 0c00 24000000 00000000 00000000 | 00c0ddeeff000000 | 0400000000000000 | deadbeef',
    decoded: { address: 0xffeeddc000n, data: bytes(0xde, 0xad, 0xbe, 0xef) },
  },
  {
    name: 'DMA_WRITE reply: address + 8-byte count (QEMU 11.1.3)',
    command: Command.DMA_WRITE,
    kind: 'reply',
    id: 0x8001,
    hex: '0180 0c00 20000000 01000000 00000000 | 00c0ddeeff000000 | 0400000000000000',
    decoded: { address: 0xffeeddc000n, count: 4n },
  },
  {
    name: 'DMA_WRITE reply: the spec table erratum, 4-byte count (SDMA-09)',
    command: Command.DMA_WRITE,
    kind: 'reply',
    id: 0x8001,
    hex: '0180 0c00 1c000000 01000000 00000000 | 00c0ddeeff000000 | 04000000',
    decoded: { address: 0xffeeddc000n, count: 4n },
    decodeOnly: true,
  },
];
