// DEVICE_FEATURE vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

const bytes = (...b: number[]) => new Uint8Array(b);

const bitmap = new Uint8Array(64);
bitmap[0] = 1; // page 0 (iova 0x100000)
bitmap[63] = 0x80; // page 511 (iova 0x2ff000)

export const vectors: Vector[] = [
  {
    name: 'DEVICE_FEATURE request: GET MIGRATION, argsz 16',
    command: Command.DEVICE_FEATURE,
    kind: 'request',
    id: 0x40,
    hex: '4000 1000 18000000 00000000 00000000 | 10000000 01000100',
    decoded: { argsz: 16, flags: 0x10001, data: bytes() },
  },
  {
    name: 'DEVICE_FEATURE reply: MIGRATION flags STOP_COPY|PRE_COPY',
    command: Command.DEVICE_FEATURE,
    kind: 'reply',
    id: 0x40,
    hex: '4000 1000 20000000 01000000 00000000 | 10000000 01000100 | 0500000000000000',
    decoded: { argsz: 16, flags: 0x10001, data: bytes(5, 0, 0, 0, 0, 0, 0, 0) },
  },
  {
    name: 'DEVICE_FEATURE request: SET MIG_DEVICE_STATE to STOP_COPY',
    command: Command.DEVICE_FEATURE,
    kind: 'request',
    id: 0x41,
    hex: '4100 1000 20000000 00000000 00000000 | 10000000 02000200 | 03000000 ffffffff',
    decoded: { argsz: 16, flags: 0x20002, data: bytes(3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff) },
  },
  {
    name: 'DEVICE_FEATURE reply: SET MIG_DEVICE_STATE echoed',
    command: Command.DEVICE_FEATURE,
    kind: 'reply',
    id: 0x41,
    hex: '4100 1000 20000000 01000000 00000000 | 10000000 02000200 | 03000000 ffffffff',
    decoded: { argsz: 16, flags: 0x20002, data: bytes(3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff) },
  },
  {
    name: 'DEVICE_FEATURE request: PROBE|SET DMA_LOGGING_START',
    command: Command.DEVICE_FEATURE,
    kind: 'request',
    id: 0x42,
    hex: '4200 1000 18000000 00000000 00000000 | 08000000 06000600',
    decoded: { argsz: 8, flags: 0x60006, data: bytes() },
  },
  {
    name: 'DEVICE_FEATURE request: SET DMA_LOGGING_START, 4 KiB pages, one range',
    command: Command.DEVICE_FEATURE,
    kind: 'request',
    id: 0x43,
    hex:
      '4300 1000 38000000 00000000 00000000 | 28000000 06000200 |' +
      '0010000000000000 01000000 00000000 | 0000100000000000 0000200000000000',
    decoded: {
      argsz: 40,
      flags: 0x20006,
      data: bytes(
        ...[0x00, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        ...[0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0],
      ),
    },
  },
  {
    name: 'DEVICE_FEATURE request: GET DMA_LOGGING_REPORT of 2 MiB, argsz 96',
    command: Command.DEVICE_FEATURE,
    kind: 'request',
    id: 0x44,
    hex: '4400 1000 30000000 00000000 00000000 | 60000000 08000100 | 0000100000000000 0000200000000000 0010000000000000',
    decoded: {
      argsz: 96,
      flags: 0x10008,
      data: bytes(
        ...[0, 0, 0x10, 0, 0, 0, 0, 0],
        ...[0, 0, 0x20, 0, 0, 0, 0, 0],
        ...[0, 0x10, 0, 0, 0, 0, 0, 0],
      ),
    },
  },
  {
    name: 'DEVICE_FEATURE reply: DMA_LOGGING_REPORT with a 64-byte bitmap (pages 0 and 511 dirty)',
    command: Command.DEVICE_FEATURE,
    kind: 'reply',
    id: 0x44,
    hex:
      '4400 1000 70000000 01000000 00000000 | 60000000 08000100 |' +
      '0000100000000000 0000200000000000 0010000000000000 |' +
      '0100000000000000 0000000000000000 0000000000000000 0000000000000000' +
      '0000000000000000 0000000000000000 0000000000000000 0000000000000080',
    decoded: {
      argsz: 96,
      flags: 0x10008,
      data: bytes(
        ...[0, 0, 0x10, 0, 0, 0, 0, 0],
        ...[0, 0, 0x20, 0, 0, 0, 0, 0],
        ...[0, 0x10, 0, 0, 0, 0, 0, 0],
        ...bitmap,
      ),
    },
  },
];
