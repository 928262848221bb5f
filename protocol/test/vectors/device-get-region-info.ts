// DEVICE_GET_REGION_INFO vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
// DEVICE_RESET vectors.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

export const vectors: Vector[] = [
  {
    name: 'DEVICE_GET_REGION_INFO request: config (7), argsz 32',
    command: Command.DEVICE_GET_REGION_INFO,
    kind: 'request',
    id: 0x11,
    hex:
      '1100 0500 30000000 00000000 00000000 | 20000000 00000000 07000000 00000000 |' +
      '0000000000000000 0000000000000000',
    decoded: { argsz: 32, index: 7 },
  },
  {
    name: 'DEVICE_GET_REGION_INFO reply: config, 4 KiB, no caps',
    command: Command.DEVICE_GET_REGION_INFO,
    kind: 'reply',
    id: 0x11,
    hex:
      '1100 0500 30000000 01000000 00000000 | 20000000 03000000 07000000 00000000 |' +
      '0010000000000000 0000000000070000',
    decoded: { argsz: 32, flags: 3, index: 7, capOffset: 0, size: 0x1000n, offset: 0x70000000000n, caps: [] },
  },
  {
    name: 'DEVICE_GET_REGION_INFO reply: BAR2 with a two-area sparse mmap cap, one fd',
    command: Command.DEVICE_GET_REGION_INFO,
    kind: 'reply',
    id: 0x12,
    fds: 1,
    hex:
      '1200 0500 60000000 01000000 00000000 | 50000000 0f000000 02000000 20000000 |' +
      '0040000000000000 0000000000020000 |' +
      '0100 0100 00000000 02000000 00000000 |' +
      '0000000000000000 0010000000000000 | 0030000000000000 0010000000000000',
    decoded: {
      argsz: 80,
      flags: 0xf,
      index: 2,
      capOffset: 32,
      size: 0x4000n,
      offset: 0x20000000000n,
      caps: [
        {
          id: 1,
          version: 1,
          areas: [
            { offset: 0n, size: 0x1000n },
            { offset: 0x3000n, size: 0x1000n },
          ],
        },
      ],
    },
  },
  {
    name: 'DEVICE_GET_REGION_INFO reply: BAR2 truncated to 32 bytes, argsz 80, CAPS cleared',
    command: Command.DEVICE_GET_REGION_INFO,
    kind: 'reply',
    id: 0x12,
    hex:
      '1200 0500 30000000 01000000 00000000 | 50000000 07000000 02000000 00000000 |' +
      '0040000000000000 0000000000020000',
    decoded: { argsz: 80, flags: 7, index: 2, capOffset: 0, size: 0x4000n, offset: 0x20000000000n, caps: [] },
  },
  {
    name: 'DEVICE_GET_REGION_INFO reply: region 9, type cap chained to a sparse cap',
    command: Command.DEVICE_GET_REGION_INFO,
    kind: 'reply',
    id: 0x13,
    fds: 1,
    hex:
      '1300 0500 60000000 01000000 00000000 | 50000000 0f000000 09000000 20000000 |' +
      '0010000000000000 0000000000090000 |' +
      '0200 0100 30000000 86800080 01000000 |' +
      '0100 0100 00000000 01000000 00000000 | 0000000000000000 0010000000000000',
    decoded: {
      argsz: 80,
      flags: 0xf,
      index: 9,
      capOffset: 32,
      size: 0x1000n,
      offset: 0x90000000000n,
      caps: [
        { id: 2, version: 1, type: 0x80008086, subtype: 1 },
        { id: 1, version: 1, areas: [{ offset: 0n, size: 0x1000n }] },
      ],
    },
  },
];
