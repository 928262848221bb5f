// DEVICE_GET_IRQ_INFO vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
// DEVICE_RESET vectors.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

export const vectors: Vector[] = [
  {
    name: 'DEVICE_GET_IRQ_INFO request: ERR (3)',
    command: Command.DEVICE_GET_IRQ_INFO,
    kind: 'request',
    id: 0x14,
    hex: '1400 0700 20000000 00000000 00000000 | 10000000 00000000 03000000 00000000',
    decoded: { argsz: 16, index: 3 },
  },
  {
    name: 'DEVICE_GET_IRQ_INFO reply: INTx, count 1, EVENTFD|MASKABLE|AUTOMASKED',
    command: Command.DEVICE_GET_IRQ_INFO,
    kind: 'reply',
    id: 0x14,
    hex: '1400 0700 20000000 01000000 00000000 | 10000000 07000000 00000000 01000000',
    decoded: { argsz: 16, flags: 7, index: 0, count: 1 },
  },
  {
    name: 'DEVICE_GET_IRQ_INFO reply: MSI-X, 2048 vectors, EVENTFD|NORESIZE',
    command: Command.DEVICE_GET_IRQ_INFO,
    kind: 'reply',
    id: 0x15,
    hex: '1500 0700 20000000 01000000 00000000 | 10000000 09000000 02000000 00080000',
    decoded: { argsz: 16, flags: 9, index: 2, count: 2048 },
  },
];
