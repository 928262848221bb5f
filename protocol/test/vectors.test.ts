// Hand-written hex vectors, one file per command under vectors/: every vector must encode to exactly its bytes
// and decode to exactly its value; and a corrupted vector must be caught (proof these comparisons can fail).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Command,
  decodeHeader,
  decodeReply,
  decodeRequest,
  encodeMessage,
  encodeReply,
  encodeRequest,
  fromHex,
  HEADER_SIZE,
  MsgFlags,
  ProtocolError,
  parseCapabilities,
  toHex,
} from '../src/index.js';
import { deepEqual } from './helpers.js';
import { allVectors, type Vector } from './vectors/index.js';
import { QEMU_VERSION_JSON, QEMU_VERSION_REQUEST_HEX } from './vectors/version.js';

const headerFlags = (v: Vector) =>
  v.flags ?? (v.kind === 'reply' ? MsgFlags.TYPE_REPLY : MsgFlags.TYPE_COMMAND);

function encodeVector(v: Vector): Uint8Array {
  const payload =
    v.kind === 'request'
      ? encodeRequest(v.command, v.decoded as never)
      : encodeReply(v.command, v.decoded as never);
  return encodeMessage({ id: v.id, command: v.command, flags: headerFlags(v) }, payload);
}

function decodeVector(bytes: Uint8Array, v: Vector): unknown {
  const h = decodeHeader(bytes);
  const payload = bytes.subarray(HEADER_SIZE, h.size);
  return v.kind === 'request'
    ? decodeRequest(v.command, payload, v.fds ?? 0)
    : decodeReply(v.command, payload, v.fds ?? 0);
}

const encodeSuite = suite('vectors: encode(decoded) === hex');
const decodeSuite = suite('vectors: decode(hex) deep-equals decoded');
const corruptSuite = suite('vectors: corruption is detected');

for (const v of allVectors) {
  const bytes = fromHex(v.hex);

  if (!v.decodeOnly) {
    encodeSuite(v.name, () => {
      assert.is(toHex(encodeVector(v)), toHex(bytes));
    });
  }

  decodeSuite(v.name, () => {
    const h = decodeHeader(bytes);
    assert.is(h.size, bytes.byteLength, 'header size matches the vector length');
    assert.is(h.command, v.command);
    assert.is(h.id, v.id);
    assert.is(h.flags, headerFlags(v));
    assert.is(h.error, 0);
    assert.equal(decodeVector(bytes, v), v.decoded);
  });

  corruptSuite(v.name, () => {
    const good = toHex(bytes);
    // 1. Flip each byte in turn: decoding must fail, or give another value, or not re-encode to the same bytes
    //    (bytes a decoder ignores, like reserved fields, are caught by the last check).
    for (let i = 0; i < bytes.byteLength; i++) {
      const bad = Uint8Array.from(bytes);
      bad[i] = bad[i]! ^ 0x5a;
      let detected = false;
      try {
        const h = decodeHeader(bad);
        if (
          h.size !== bad.byteLength ||
          h.command !== v.command ||
          h.id !== v.id ||
          h.flags !== headerFlags(v)
        ) {
          detected = true;
        } else {
          const value = decodeVector(bad, v);
          detected =
            !deepEqual(value, v.decoded) || toHex(encodeVector({ ...v, decoded: value })) !== toHex(bad);
        }
      } catch (e) {
        if (!(e instanceof ProtocolError) && !(e instanceof RangeError)) throw e;
        detected = true;
      }
      assert.ok(detected, `flipping byte ${i} went unnoticed`);
    }
    // 2. The encoder's output shifted by one byte must not match the vector.
    if (!v.decodeOnly) {
      const out = encodeVector(v);
      const shifted = toHex(Uint8Array.from([0, ...out.subarray(0, out.byteLength - 1)]));
      assert.is.not(shifted, good);
      assert.is.not(toHex(out.subarray(1)), good);
    }
  });
}

const qemu = suite('vectors: QEMU 11.1.3 VERSION request');

qemu('is 214 bytes including the header', () => {
  assert.is(fromHex(QEMU_VERSION_REQUEST_HEX).byteLength, 214);
  assert.is(HEADER_SIZE + 4 + new TextEncoder().encode(QEMU_VERSION_JSON).byteLength + 1, 214);
});

qemu('decodes to the capabilities QEMU offers', () => {
  const bytes = fromHex(QEMU_VERSION_REQUEST_HEX);
  const req = decodeRequest(Command.VERSION, bytes.subarray(HEADER_SIZE), 0);
  assert.is(req.major, 0);
  assert.is(req.minor, 0);
  const { caps, unknownKeys } = parseCapabilities(req.capabilities);
  assert.equal(caps, {
    maxMsgFds: 16,
    maxDataXferSize: 1048576,
    pgsizes: 4096,
    maxDmaMaps: 65535,
    migration: { pgsize: 4096, maxBitmapSize: 268435456 },
    writeMultiple: true,
  });
  assert.equal(unknownKeys, []);
});

encodeSuite.run();
decodeSuite.run();
corruptSuite.run();
qemu.run();
