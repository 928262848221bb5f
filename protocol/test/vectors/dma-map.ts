// DMA_MAP vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

export const vectors: Vector[] = [
  {
    name: 'DMA_MAP request: pc RAM above 1 MiB, rw, memfd at file offset 0x100000',
    command: Command.DMA_MAP,
    kind: 'request',
    id: 4,
    fds: 1,
    hex:
      '0400 0200 30000000 00000000 00000000 | 20000000 03000000 | 0000100000000000 | 0000100000000000 |' +
      '0000f00f00000000',
    decoded: { argsz: 32, flags: 3, offset: 0x100000n, address: 0x100000n, size: 0xff00000n },
  },
  {
    name: 'DMA_MAP request: bios, read-only, no fd',
    command: Command.DMA_MAP,
    kind: 'request',
    id: 5,
    hex:
      '0500 0200 30000000 00000000 00000000 | 20000000 01000000 | 0000000000000000 | 0000fcff00000000 |' +
      '0000040000000000',
    decoded: { argsz: 32, flags: 1, offset: 0n, address: 0xfffc0000n, size: 0x40000n },
  },
  {
    name: 'DMA_MAP request: argsz 64 with a 32-byte payload (MAP-06), NO_REPLY',
    command: Command.DMA_MAP,
    kind: 'request',
    id: 0xffff,
    flags: 0x10,
    hex:
      'ffff 0200 30000000 10000000 00000000 | 40000000 02000000 | efcdab8967452301 | 00f0ffffffffffff |' +
      '0010000000000000',
    decoded: {
      argsz: 64,
      flags: 2,
      offset: 0x0123456789abcdefn,
      address: 0xfffffffffffff000n,
      size: 0x1000n,
    },
  },
  {
    name: 'DMA_MAP reply: header only',
    command: Command.DMA_MAP,
    kind: 'reply',
    id: 4,
    hex: '0400 0200 10000000 01000000 00000000',
    decoded: {},
  },
];
