// DEVICE_GET_INFO vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
// DEVICE_RESET vectors.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

export const vectors: Vector[] = [
  {
    name: 'DEVICE_GET_INFO request: argsz 16',
    command: Command.DEVICE_GET_INFO,
    kind: 'request',
    id: 0x10,
    hex: '1000 0400 20000000 00000000 00000000 | 10000000 00000000 00000000 00000000',
    decoded: { argsz: 16 },
  },
  {
    name: 'DEVICE_GET_INFO reply: RESET|PCI, 9 regions, 5 irqs',
    command: Command.DEVICE_GET_INFO,
    kind: 'reply',
    id: 0x10,
    hex: '1000 0400 20000000 01000000 00000000 | 10000000 03000000 09000000 05000000',
    decoded: { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 },
  },
];
