// Framer: any chunking yields the same whole messages; fds attach to the message holding the last byte of the
// chunk they came with; bad sizes and types are typed errors that hand back every fd.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Command,
  concatBytes,
  DEFAULT_MAX_MESSAGE_SIZE,
  Errno,
  encodeHeader,
  encodeMessage,
  type Frame,
  Framer,
  FramingError,
  MsgFlags,
  toHex,
} from '../src/index.js';
import { prng } from './helpers.js';

/** A message whose id is its sequence number and whose payload has `len` recognisable bytes. */
function message(seq: number, len: number): Uint8Array {
  const payload = Uint8Array.from({ length: len }, (_, i) => (seq * 31 + i) & 0xff);
  return encodeMessage(
    { id: seq & 0xffff, command: Command.REGION_WRITE, flags: MsgFlags.TYPE_COMMAND },
    payload,
  );
}

function expectFrames(frames: Frame[], msgs: Uint8Array[]): void {
  assert.is(frames.length, msgs.length);
  frames.forEach((f, i) => {
    const whole = concatBytes([encodeHeader(f.header), f.payload]);
    assert.is(toHex(whole), toHex(msgs[i]!), `message ${i}`);
  });
}

function splitRandomly(bytes: Uint8Array, r: ReturnType<typeof prng>, maxChunk: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < bytes.byteLength; ) {
    const n = Math.min(1 + r.int(maxChunk), bytes.byteLength - at);
    chunks.push(bytes.subarray(at, at + n));
    at += n;
  }
  return chunks;
}

test('a header-only message in one chunk', () => {
  const f = new Framer();
  const msg = encodeMessage({ id: 7, command: Command.DEVICE_RESET });
  const frames = f.push(msg);
  assert.is(frames.length, 1);
  assert.equal(frames[0]!.header, { id: 7, command: Command.DEVICE_RESET, size: 16, flags: 0, error: 0 });
  assert.is(frames[0]!.payload.byteLength, 0);
  assert.equal(frames[0]!.fds, []);
  assert.is(f.buffered, 0);
});

test('fed one byte at a time (HDR-01)', () => {
  const msgs = [message(1, 0), message(2, 5), message(3, 300)];
  const all = concatBytes(msgs);
  const f = new Framer();
  const frames: Frame[] = [];
  for (let i = 0; i < all.byteLength; i++) {
    const out = f.push(all.subarray(i, i + 1));
    frames.push(...out);
    if (out.length === 0) assert.ok(f.buffered > 0, `byte ${i} is held`);
  }
  expectFrames(frames, msgs);
  assert.is(f.buffered, 0);
});

test('header split at bytes 4, 8 and 15 (HDR-03)', () => {
  for (const cut of [4, 8, 15]) {
    const msg = message(9, 20);
    const f = new Framer();
    assert.equal(f.push(msg.subarray(0, cut)), []);
    assert.is(f.buffered, cut);
    expectFrames(f.push(msg.subarray(cut)), [msg]);
  }
});

test('1000 concatenated messages in one chunk (HDR-02, HDR-28)', () => {
  const r = prng(1);
  const msgs = Array.from({ length: 1000 }, (_, i) => message(i, r.int(200)));
  const f = new Framer();
  const frames = f.push(concatBytes(msgs));
  expectFrames(frames, msgs);
  assert.is(f.buffered, 0);
});

test('1000 concatenated messages in random chunkings', () => {
  const r = prng(2);
  const msgs = Array.from({ length: 1000 }, (_, i) =>
    message(i, r.pick([0, 1, 8, 16, 255, 1024, r.int(700)])),
  );
  const all = concatBytes(msgs);
  for (const maxChunk of [1, 3, 17, 64, 1000, 65536]) {
    const f = new Framer();
    const frames: Frame[] = [];
    for (const chunk of splitRandomly(all, r, maxChunk)) frames.push(...f.push(chunk));
    expectFrames(frames, msgs);
    assert.is(f.buffered, 0);
  }
});

test('payloads are copies: reusing the chunk buffer does not change delivered frames', () => {
  const msg = message(1, 8);
  const chunk = Uint8Array.from(msg);
  const f = new Framer();
  const [frame] = f.push(chunk);
  chunk.fill(0);
  assert.is(toHex(concatBytes([encodeHeader(frame!.header), frame!.payload])), toHex(msg));
});

test('fds with a whole message belong to it', () => {
  const f = new Framer();
  const frames = f.push(message(1, 32), [10, 11]);
  assert.equal(frames[0]!.fds, [10, 11]);
});

test('fds go to the message holding the last byte of their chunk (bulk rule)', () => {
  const a = message(1, 10);
  const b = message(2, 10);
  const c = message(3, 10);
  const f = new Framer();
  // chunk 1: all of A and the first 5 bytes of B, with fd 20 -> B (the last message starting in the chunk)
  let frames = f.push(concatBytes([a, b.subarray(0, 5)]), [20]);
  assert.is(frames.length, 1);
  assert.equal(frames[0]!.fds, []);
  assert.is(f.bufferedFds, 1);
  // chunk 2: the rest of B and all of C, with fd 21 -> C (it holds the chunk's last byte)
  frames = f.push(concatBytes([b.subarray(5), c]), [21]);
  assert.is(frames.length, 2);
  assert.equal(frames[0]!.fds, [20]);
  assert.equal(frames[1]!.fds, [21]);
  assert.is(f.bufferedFds, 0);
});

test('fds in a chunk that ends exactly at a message boundary belong to the message just completed', () => {
  const f = new Framer();
  const frames = f.push(concatBytes([message(1, 4), message(2, 4)]), [5, 6, 7]);
  assert.equal(frames[0]!.fds, []);
  assert.equal(frames[1]!.fds, [5, 6, 7]);
});

test('fds arriving with a middle piece of a message stay with that message', () => {
  const m = message(1, 100);
  const f = new Framer();
  f.push(m.subarray(0, 10));
  f.push(m.subarray(10, 50), [3]);
  const frames = f.push(m.subarray(50), [4]);
  assert.equal(frames[0]!.fds, [3, 4]);
});

test('fds with an empty chunk at a boundary go to the next message', () => {
  const f = new Framer();
  assert.equal(f.push(new Uint8Array(0), [9]), []);
  assert.is(f.bufferedFds, 1);
  const frames = f.push(message(1, 0));
  assert.equal(frames[0]!.fds, [9]);
});

test('random chunking with fds: every fd reaches the message that owns its chunk', () => {
  const r = prng(3);
  const msgs = Array.from({ length: 300 }, (_, i) => message(i, r.int(300)));
  const starts: number[] = [];
  let at = 0;
  for (const m of msgs) {
    starts.push(at);
    at += m.byteLength;
  }
  const owner = (lastByte: number) => {
    let lo = 0;
    for (let i = 0; i < starts.length; i++) if (starts[i]! <= lastByte) lo = i;
    return lo;
  };
  const all = concatBytes(msgs);
  const f = new Framer();
  const frames: Frame[] = [];
  const expected = new Map<number, number[]>();
  let pos = 0;
  let nextFd = 100;
  for (const chunk of splitRandomly(all, r, 500)) {
    const fds = r.int(3) === 0 ? [nextFd++, nextFd++] : [];
    pos += chunk.byteLength;
    if (fds.length) {
      const m = owner(pos - 1);
      expected.set(m, [...(expected.get(m) ?? []), ...fds]);
    }
    frames.push(...f.push(chunk, fds));
  }
  expectFrames(frames, msgs);
  frames.forEach((fr, i) => {
    assert.equal(fr.fds, expected.get(i) ?? [], `message ${i}`);
  });
});

function badHeader(size: number, flags = 0): Uint8Array {
  return encodeHeader({ id: 0x42, command: Command.DEVICE_GET_INFO, size, flags, error: 0 });
}

test('size < 16 is a FramingError with EINVAL (HDR-04, HDR-05)', () => {
  for (const size of [0, 1, 15]) {
    const f = new Framer();
    try {
      f.push(badHeader(size));
      assert.unreachable('should throw');
    } catch (e) {
      assert.instance(e, FramingError);
      const fe = e as FramingError;
      assert.is(fe.errno, Errno.EINVAL);
      assert.is(fe.code, 'BAD_MESSAGE_SIZE');
      assert.is(fe.header?.id, 0x42);
    }
  }
});

test('size above the limit is refused at the header, before any body (HDR-07, HDR-08)', () => {
  const f = new Framer();
  assert.is(f.maxMessageSize, DEFAULT_MAX_MESSAGE_SIZE);
  try {
    f.push(badHeader(0xffffffff));
    assert.unreachable('should throw');
  } catch (e) {
    assert.is((e as FramingError).code, 'MESSAGE_TOO_LARGE');
    assert.is((e as FramingError).errno, Errno.EINVAL);
  }
  const small = new Framer({ maxMessageSize: 64 });
  assert.is(small.push(message(1, 48)).length, 1, 'exactly the limit is fine');
  assert.throws(
    () => small.push(message(2, 49)),
    (e: unknown) => (e as FramingError).code === 'MESSAGE_TOO_LARGE',
  );
});

test('maxMessageSize can be raised after negotiation', () => {
  const f = new Framer({ maxMessageSize: 32 });
  f.maxMessageSize = 1024;
  assert.is(f.push(message(1, 500)).length, 1);
});

test('an unknown message type is a FramingError (HDR-10)', () => {
  for (const type of [2, 3, 0xf]) {
    const f = new Framer();
    assert.throws(
      () => f.push(badHeader(16, type)),
      (e: unknown) => e instanceof FramingError && e.code === 'BAD_MESSAGE_TYPE' && e.errno === Errno.EINVAL,
    );
  }
  // NO_REPLY, ERROR and reserved bits do not change the type (HDR-11, HDR-12)
  const f = new Framer();
  assert.is(f.push(badHeader(16, 0x10 | 0x20 | 0x40000000)).length, 1);
});

test('a framing error returns the frames completed before it and every undelivered fd', () => {
  const f = new Framer();
  f.push(message(0, 10).subarray(0, 3), [1]); // message 0 in progress holds fd 1
  const rest = concatBytes([message(0, 10).subarray(3), message(1, 2), badHeader(4)]);
  try {
    f.push(rest, [2]);
    assert.unreachable('should throw');
  } catch (e) {
    const fe = e as FramingError;
    assert.is(fe.frames.length, 2);
    assert.equal(fe.frames[0]!.fds, [1]);
    assert.equal(fe.fds, [2]);
  }
  // The stream stays failed; new fds are handed straight back.
  try {
    f.push(message(5, 0), [3]);
    assert.unreachable('should throw');
  } catch (e) {
    assert.equal((e as FramingError).fds, [3]);
    assert.equal((e as FramingError).frames, []);
  }
  assert.equal(f.reset(), []);
  assert.is(f.push(message(6, 0)).length, 1, 'usable again after reset');
});

test('reset returns the fds of an incomplete message (disconnect mid-body, HDR-30)', () => {
  const f = new Framer();
  f.push(message(1, 100).subarray(0, 40), [7, 8]);
  assert.is(f.buffered, 40);
  assert.equal(f.reset(), [7, 8]);
  assert.is(f.buffered, 0);
});

test.run();
