// DEVICE_GET_REGION_IO_FDS vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
// DEVICE_RESET vectors.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

export const vectors: Vector[] = [
  {
    name: 'DEVICE_GET_REGION_IO_FDS request: region 0, argsz 4096',
    command: Command.DEVICE_GET_REGION_IO_FDS,
    kind: 'request',
    id: 2,
    hex: '0200 0600 20000000 00000000 00000000 | 00100000 00000000 00000000 00000000',
    decoded: { argsz: 4096, index: 0 },
  },
  {
    name: 'DEVICE_GET_REGION_IO_FDS reply: ioeventfd + ioregionfd sharing fd 0',
    command: Command.DEVICE_GET_REGION_IO_FDS,
    kind: 'reply',
    id: 2,
    fds: 1,
    hex:
      '0200 0600 70000000 01000000 00000000 | 60000000 00000000 00000000 02000000 |' +
      '1000000000000000 0400000000000000 00000000 00000000 01000000 00000000 3412000000000000 |' +
      '2000000000000000 0000000000000000 00000000 01000000 00000000 00000000 feca000000000000',
    decoded: {
      argsz: 96,
      flags: 0,
      index: 0,
      count: 2,
      subRegions: [
        { offset: 0x10n, size: 4n, fdIndex: 0, type: 0, flags: 1, datamatch: 0x1234n },
        { offset: 0x20n, size: 0n, fdIndex: 0, type: 1, flags: 0, datamatch: 0xcafen },
      ],
    },
  },
  {
    name: 'DEVICE_GET_REGION_IO_FDS reply: truncated, count 2, argsz 96, no fds',
    command: Command.DEVICE_GET_REGION_IO_FDS,
    kind: 'reply',
    id: 2,
    hex: '0200 0600 20000000 01000000 00000000 | 60000000 00000000 00000000 02000000',
    decoded: { argsz: 96, flags: 0, index: 0, count: 2, subRegions: [] },
  },
];
