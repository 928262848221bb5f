// VERSION vectors: whole messages (header + payload), hex typed by hand from the spec's layouts.
import { Command, QEMU_VERSION_JSON } from '../../src/index.js';
import { nul } from '../helpers.js';
import type { Vector } from './types.js';

/** The JSON QEMU 11.1.3 proposes (the request below is typed out independently from the same text). */
export { QEMU_VERSION_JSON };

/** QEMU 11.1.3's VERSION request: 214 bytes (0xd6), id 0, proposing 0.0. Hex typed out from the JSON text. */
export const QEMU_VERSION_REQUEST_HEX =
  '0000 0100 d6000000 00000000 00000000 | 0000 0000 |' +
  '7b226361706162696c6974696573223a207b22706773697a6573223a20343039' +
  '362c20226d61785f6d73675f666473223a2031362c20226d61785f646d615f6d' +
  '617073223a2036353533352c20226d61785f646174615f786665725f73697a65' +
  '223a20313034383537362c20226d6967726174696f6e223a207b226d61785f62' +
  '69746d61705f73697a65223a203236383433353435362c2022706773697a6522' +
  '3a20343039367d2c202277726974655f6d756c7469706c65223a20747275657d' +
  '7d00';

export const vectors: Vector[] = [
  {
    name: 'VERSION request: QEMU 11.1.3, 214 bytes',
    command: Command.VERSION,
    kind: 'request',
    id: 0,
    hex: QEMU_VERSION_REQUEST_HEX,
    decoded: { major: 0, minor: 0, capabilities: nul(QEMU_VERSION_JSON) },
  },
  {
    name: 'VERSION request: 0.0 without JSON',
    command: Command.VERSION,
    kind: 'request',
    id: 1,
    hex: '0100 0100 14000000 00000000 00000000 | 0000 0000',
    decoded: { major: 0, minor: 0 },
  },
  {
    name: 'VERSION request: 0.99 with {}',
    command: Command.VERSION,
    kind: 'request',
    id: 0,
    hex: '0000 0100 17000000 00000000 00000000 | 0000 6300 | 7b7d00',
    decoded: { major: 0, minor: 99, capabilities: nul('{}') },
  },
  {
    name: 'VERSION reply: minimal compact caps (max_msg_fds 8, 1 MiB)',
    command: Command.VERSION,
    kind: 'reply',
    id: 0,
    hex:
      '0000 0100 54000000 01000000 00000000 | 0000 0000 |' +
      '7b226361706162696c6974696573223a7b226d61785f6d73675f666473223a382c22' +
      '6d61785f646174615f786665725f73697a65223a313034383537367d7d00',
    decoded: {
      major: 0,
      minor: 0,
      capabilities: nul('{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576}}'),
    },
  },
  {
    name: 'VERSION reply: twin-socket enabled, one fd',
    command: Command.VERSION,
    kind: 'reply',
    id: 0,
    fds: 1,
    hex:
      '0000 0100 83000000 01000000 00000000 | 0000 0200 |' +
      '7b226361706162696c6974696573223a7b226d61785f6d73675f666473223a31362c22' +
      '6d61785f646174615f786665725f73697a65223a313034383537362c227477696e5f73' +
      '6f636b6574223a7b22737570706f72746564223a747275652c2266645f696e646578' +
      '223a307d7d7d00',
    decoded: {
      major: 0,
      minor: 2,
      capabilities: nul(
        '{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"twin_socket":{"supported":true,"fd_index":0}}}',
      ),
    },
  },
];
