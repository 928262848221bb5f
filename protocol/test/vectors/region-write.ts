// REGION_WRITE vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

const bytes = (...b: number[]) => new Uint8Array(b);

export const vectors: Vector[] = [
  {
    name: 'REGION_WRITE request: ROM BAR sizing, 0xfffff800 to 0x30',
    command: Command.REGION_WRITE,
    kind: 'request',
    id: 0x33,
    hex: '3300 0a00 24000000 00000000 00000000 | 3000000000000000 07000000 04000000 | 00f8ffff',
    decoded: { offset: 0x30n, region: 7, data: bytes(0x00, 0xf8, 0xff, 0xff) },
  },
  {
    name: 'REGION_WRITE request: posted 8-byte BAR0 write (NO_REPLY)',
    command: Command.REGION_WRITE,
    kind: 'request',
    id: 0x34,
    flags: 0x10,
    hex: '3400 0a00 28000000 10000000 00000000 | 0800000000000000 00000000 08000000 | 8877665544332211',
    decoded: { offset: 8n, region: 0, data: bytes(0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11) },
  },
  {
    name: 'REGION_WRITE reply: the 16-byte echo',
    command: Command.REGION_WRITE,
    kind: 'reply',
    id: 0x33,
    hex: '3300 0a00 20000000 01000000 00000000 | 3000000000000000 07000000 04000000',
    decoded: { offset: 0x30n, region: 7, count: 4 },
  },
];
