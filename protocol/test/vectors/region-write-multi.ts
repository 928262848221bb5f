// REGION_WRITE_MULTI vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

const bytes = (...b: number[]) => new Uint8Array(b);

export const vectors: Vector[] = [
  {
    name: 'REGION_WRITE_MULTI request: two writes, NO_REPLY',
    command: Command.REGION_WRITE_MULTI,
    kind: 'request',
    id: 0x35,
    flags: 0x10,
    hex:
      '3500 0f00 48000000 10000000 00000000 | 0200000000000000 |' +
      '0001000000000000 00000000 04000000 efbeadde00000000 |' +
      '0401000000000000 00000000 01000000 0100000000000000',
    decoded: {
      writes: [
        { offset: 0x100n, region: 0, data: bytes(0xef, 0xbe, 0xad, 0xde) },
        { offset: 0x104n, region: 0, data: bytes(1) },
      ],
    },
  },
  {
    name: 'REGION_WRITE_MULTI request: wr_cnt 0',
    command: Command.REGION_WRITE_MULTI,
    kind: 'request',
    id: 0x36,
    hex: '3600 0f00 18000000 00000000 00000000 | 0000000000000000',
    decoded: { writes: [] },
  },
  {
    name: 'REGION_WRITE_MULTI reply: 2 writes done',
    command: Command.REGION_WRITE_MULTI,
    kind: 'reply',
    id: 0x35,
    hex: '3500 0f00 18000000 01000000 00000000 | 0200000000000000',
    decoded: { count: 2 },
  },
];
