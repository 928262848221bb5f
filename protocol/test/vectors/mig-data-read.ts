// MIG_DATA_READ vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

const bytes = (...b: number[]) => new Uint8Array(b);

export const vectors: Vector[] = [
  {
    name: 'MIG_DATA_READ request: 16 bytes, argsz 24',
    command: Command.MIG_DATA_READ,
    kind: 'request',
    id: 0x50,
    hex: '5000 1100 18000000 00000000 00000000 | 18000000 10000000',
    decoded: { argsz: 24, size: 16 },
  },
  {
    name: 'MIG_DATA_READ reply: short read of 4 bytes (end of data)',
    command: Command.MIG_DATA_READ,
    kind: 'reply',
    id: 0x50,
    hex: '5000 1100 1c000000 01000000 00000000 | 0c000000 04000000 | a1a2a3a4',
    decoded: { argsz: 12, data: bytes(0xa1, 0xa2, 0xa3, 0xa4) },
  },
];
