// REGION_READ vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

const bytes = (...b: number[]) => new Uint8Array(b);

export const vectors: Vector[] = [
  {
    name: 'REGION_READ request: whole config space, 256 bytes of region 7',
    command: Command.REGION_READ,
    kind: 'request',
    id: 0x30,
    hex: '3000 0900 20000000 00000000 00000000 | 0000000000000000 07000000 00010000',
    decoded: { offset: 0n, region: 7, count: 256 },
  },
  {
    name: 'REGION_READ reply: vendor/device 1b36:0005',
    command: Command.REGION_READ,
    kind: 'reply',
    id: 0x31,
    hex: '3100 0900 24000000 01000000 00000000 | 0000000000000000 07000000 04000000 | 361b0500',
    decoded: { offset: 0n, region: 7, data: bytes(0x36, 0x1b, 0x05, 0x00) },
  },
  {
    name: 'REGION_READ reply: count 0 echo at 0x3d',
    command: Command.REGION_READ,
    kind: 'reply',
    id: 0x32,
    hex: '3200 0900 20000000 01000000 00000000 | 3d00000000000000 07000000 00000000',
    decoded: { offset: 0x3dn, region: 7, data: bytes() },
  },
];
