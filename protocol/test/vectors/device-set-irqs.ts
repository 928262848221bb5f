// DEVICE_SET_IRQS vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
// DEVICE_RESET vectors.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

export const vectors: Vector[] = [
  {
    name: 'DEVICE_SET_IRQS request: INTx EVENTFD|TRIGGER, 1 fd (QEMU: argsz 20, size 36)',
    command: Command.DEVICE_SET_IRQS,
    kind: 'request',
    id: 0x20,
    fds: 1,
    hex: '2000 0800 24000000 00000000 00000000 | 14000000 24000000 00000000 00000000 01000000',
    decoded: { argsz: 20, flags: 0x24, index: 0, start: 0, count: 1 },
  },
  {
    name: 'DEVICE_SET_IRQS request: MSI-X chunk start 8 count 8, 8 fds',
    command: Command.DEVICE_SET_IRQS,
    kind: 'request',
    id: 0x21,
    fds: 8,
    hex: '2100 0800 24000000 00000000 00000000 | 14000000 24000000 02000000 08000000 08000000',
    decoded: { argsz: 20, flags: 0x24, index: 2, start: 8, count: 8 },
  },
  {
    name: 'DEVICE_SET_IRQS request: EVENTFD|TRIGGER count 3 with no fds (de-assign)',
    command: Command.DEVICE_SET_IRQS,
    kind: 'request',
    id: 0x22,
    hex: '2200 0800 24000000 00000000 00000000 | 14000000 24000000 02000000 00000000 03000000',
    decoded: { argsz: 20, flags: 0x24, index: 2, start: 0, count: 3 },
  },
  {
    name: 'DEVICE_SET_IRQS request: NONE|TRIGGER count 0 (QEMU before reset)',
    command: Command.DEVICE_SET_IRQS,
    kind: 'request',
    id: 0x23,
    hex: '2300 0800 24000000 00000000 00000000 | 14000000 21000000 00000000 00000000 00000000',
    decoded: { argsz: 20, flags: 0x21, index: 0, start: 0, count: 0 },
  },
  {
    name: 'DEVICE_SET_IRQS request: NONE|UNMASK (TCG EOI)',
    command: Command.DEVICE_SET_IRQS,
    kind: 'request',
    id: 0x24,
    hex: '2400 0800 24000000 00000000 00000000 | 14000000 11000000 00000000 00000000 01000000',
    decoded: { argsz: 20, flags: 0x11, index: 0, start: 0, count: 1 },
  },
  {
    name: 'DEVICE_SET_IRQS request: EVENTFD|UNMASK (KVM resample fd)',
    command: Command.DEVICE_SET_IRQS,
    kind: 'request',
    id: 0x25,
    fds: 1,
    hex: '2500 0800 24000000 00000000 00000000 | 14000000 14000000 00000000 00000000 01000000',
    decoded: { argsz: 20, flags: 0x14, index: 0, start: 0, count: 1 },
  },
  {
    name: 'DEVICE_SET_IRQS request: BOOL|TRIGGER start 0 count 2 data [1, 0]',
    command: Command.DEVICE_SET_IRQS,
    kind: 'request',
    id: 0x26,
    hex: '2600 0800 26000000 00000000 00000000 | 16000000 22000000 02000000 00000000 02000000 | 0100',
    decoded: { argsz: 22, flags: 0x22, index: 2, start: 0, count: 2, data: new Uint8Array([1, 0]) },
  },
  {
    name: 'DEVICE_SET_IRQS reply: header only',
    command: Command.DEVICE_SET_IRQS,
    kind: 'reply',
    id: 0x20,
    hex: '2000 0800 10000000 01000000 00000000',
    decoded: {},
  },
];
