// Property tests with a seeded PRNG: for every command and both directions,
//  1. decode(encode(x)) deep-equals x over random valid messages;
//  2. hostile bytes (random mutations of valid encodings, and pure noise) either decode or throw a
//     ProtocolError, never anything else; whatever decodes is stable (decode(encode(decode(b))) == decode(b)), and
//     for codecs without ignored bytes encode(decode(b)) === b.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  ALL_COMMANDS,
  Command,
  commandName,
  decodeReply,
  decodeRequest,
  encodeReply,
  encodeRequest,
  ProtocolError,
  toHex,
} from '../src/index.js';
import { replyGenerators, requestGenerators } from './generators.js';
import { deepEqual, prng } from './helpers.js';

const ITERATIONS = 200;
const SEED = 0x5eed;

/**
 * Decoders that ignore some bytes, so encode(decode(b)) may legitimately differ from b: fields the spec says the
 * client leaves zero (GET_INFO, GET_IRQ_INFO and GET_REGION_INFO requests), RESET's payload, padding
 * (REGION_WRITE_MULTI data tails, IO_FDS entry padding), unknown region caps and chain gaps, and the tolerated
 * legacy shapes (header-only count-0 REGION_READ reply, 12-byte DMA_WRITE reply).
 */
const LOSSY = new Set([
  `${Command.DEVICE_GET_INFO}/request`,
  `${Command.DEVICE_GET_IRQ_INFO}/request`,
  `${Command.DEVICE_GET_REGION_INFO}/request`,
  `${Command.DEVICE_GET_REGION_INFO}/reply`,
  `${Command.DEVICE_GET_REGION_IO_FDS}/reply`,
  `${Command.DEVICE_RESET}/request`,
  `${Command.REGION_WRITE_MULTI}/request`,
  `${Command.REGION_READ}/reply`,
  `${Command.DMA_WRITE}/reply`,
]);

type Kind = 'request' | 'reply';
const enc = (c: Command, k: Kind, x: unknown) =>
  k === 'request' ? encodeRequest(c, x as never) : encodeReply(c, x as never);
const dec = (c: Command, k: Kind, b: Uint8Array, fds: number) =>
  k === 'request' ? decodeRequest(c, b, fds) : decodeReply(c, b, fds);

const roundTrip = suite('property: decode(encode(x)) == x');
const hostile = suite('property: hostile bytes');

for (const command of ALL_COMMANDS) {
  for (const kind of ['request', 'reply'] as const) {
    const gen = kind === 'request' ? requestGenerators[command] : replyGenerators[command];
    const label = `${commandName(command)} ${kind}`;

    roundTrip(label, () => {
      const r = prng(SEED + command * 2 + (kind === 'reply' ? 1 : 0));
      for (let i = 0; i < ITERATIONS; i++) {
        const { value, fds } = gen(r);
        const bytes = enc(command, kind, value);
        const back = dec(command, kind, bytes, fds);
        if (!deepEqual(back, value)) assert.equal(back, value, `iteration ${i}`);
        // encode(decode(bytes)) for bytes that came from a valid message
        assert.is(toHex(enc(command, kind, back)), toHex(bytes), `re-encode, iteration ${i}`);
      }
    });

    hostile(label, () => {
      const r = prng(SEED ^ (command * 977 + (kind === 'reply' ? 7 : 0)));
      let accepted = 0;
      let rejected = 0;
      for (let i = 0; i < ITERATIONS; i++) {
        const { value, fds } = gen(r);
        let bytes: Uint8Array = enc(command, kind, value);
        switch (r.int(4)) {
          case 0: {
            bytes = Uint8Array.from(bytes);
            if (bytes.byteLength > 0) bytes[r.int(bytes.byteLength)] ^= 1 << r.int(8);
            break;
          }
          case 1:
            bytes = bytes.subarray(0, r.int(bytes.byteLength + 1));
            break;
          case 2:
            bytes = Uint8Array.from([...bytes, ...r.bytes(1 + r.int(8))]);
            break;
          default:
            bytes = r.bytes(r.int(64));
        }
        const fdCount = r.int(4) === 0 ? r.int(3) : fds;
        let decoded: unknown;
        try {
          decoded = dec(command, kind, bytes, fdCount);
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
          assert.ok(e.errno > 0);
          rejected++;
          continue;
        }
        accepted++;
        const again = enc(command, kind, decoded);
        assert.equal(dec(command, kind, again, fdCount), decoded, `stable, iteration ${i}`);
        if (!LOSSY.has(`${command}/${kind}`))
          assert.is(toHex(again), toHex(bytes), `canonical, iteration ${i}`);
      }
      assert.ok(accepted + rejected === ITERATIONS);
    });
  }
}

roundTrip.run();
hostile.run();
