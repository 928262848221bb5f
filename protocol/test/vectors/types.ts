import type { Command } from '../../src/index.js';

/**
 * A hand-written wire vector: the whole message (header + payload) as hex, and what its payload decodes to.
 * `fds` is the number of fds that travel with it; `decodeOnly` marks inputs the encoder never produces
 * (e.g. the 12-byte DMA_WRITE reply erratum).
 */
export interface Vector {
  name: string;
  command: Command;
  kind: 'request' | 'reply';
  id: number;
  /** Header flags; 0 for a request, 1 for a reply when omitted. */
  flags?: number;
  fds?: number;
  hex: string;
  decoded: unknown;
  decodeOnly?: boolean;
}
