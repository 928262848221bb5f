// MIG_DATA_WRITE vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

const bytes = (...b: number[]) => new Uint8Array(b);

export const vectors: Vector[] = [
  {
    name: 'MIG_DATA_WRITE request: 4 bytes',
    command: Command.MIG_DATA_WRITE,
    kind: 'request',
    id: 0x51,
    hex: '5100 1200 1c000000 00000000 00000000 | 0c000000 04000000 | b1b2b3b4',
    decoded: { argsz: 12, data: bytes(0xb1, 0xb2, 0xb3, 0xb4) },
  },
  {
    name: 'MIG_DATA_WRITE reply: header only',
    command: Command.MIG_DATA_WRITE,
    kind: 'reply',
    id: 0x51,
    hex: '5100 1200 10000000 01000000 00000000',
    decoded: {},
  },
];
