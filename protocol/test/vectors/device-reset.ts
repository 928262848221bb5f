// DEVICE_RESET vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
// DEVICE_RESET vectors.
import { Command } from '../../src/index.js';
import type { Vector } from './types.js';

export const vectors: Vector[] = [
  {
    name: 'DEVICE_RESET request: header only',
    command: Command.DEVICE_RESET,
    kind: 'request',
    id: 6,
    hex: '0600 0d00 10000000 00000000 00000000',
    decoded: {},
  },
  {
    name: 'DEVICE_RESET reply: header only',
    command: Command.DEVICE_RESET,
    kind: 'reply',
    id: 6,
    hex: '0600 0d00 10000000 01000000 00000000',
    decoded: {},
  },
];
