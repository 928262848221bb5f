// The 16-byte header, message helpers and error replies.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  ALL_COMMANDS,
  Command,
  checkHeader,
  commandName,
  decodeHeader,
  Errno,
  encodeErrorReply,
  encodeHeader,
  encodeMessage,
  encodeRegionReadReply,
  encodeRegionReadRequest,
  encodeRegionWriteReply,
  encodeRegionWriteRequest,
  encodeReplyMessage,
  errnoName,
  fromHex,
  HEADER_SIZE,
  isCommand,
  isErrorReply,
  isKnownCommand,
  isReply,
  MsgFlags,
  messageIdOf,
  ProtocolError,
  plainCommandOf,
  regionRwCountOf,
  regionRwOffsetOf,
  regionRwRegionOf,
  replyErrno,
  toHex,
  wantsReply,
  writeRegionRwReply,
  writeReplyMessage,
} from '../src/index.js';
import { throwsErrno } from './helpers.js';

test('constants match the contract', () => {
  assert.is(HEADER_SIZE, 16);
  assert.equal(MsgFlags, { TYPE_MASK: 0xf, TYPE_COMMAND: 0, TYPE_REPLY: 1, NO_REPLY: 0x10, ERROR: 0x20 });
  assert.equal([...ALL_COMMANDS], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18]);
  assert.is(Command.REGION_WRITE_MULTI, 15);
  assert.is(Errno.EINVAL, 22);
  assert.is(Errno.ENOTSUP, 95);
  assert.is(errnoName(22), 'EINVAL');
  assert.is(errnoName(4242), 'errno 4242');
  assert.is(commandName(14), 'UNKNOWN(14)');
  assert.not.ok(isKnownCommand(14));
  assert.ok(isKnownCommand(18));
});

test('header layout: id u16 | command u16 | size u32 | flags u32 | error u32, little-endian', () => {
  const h = { id: 0x1234, command: 0x0506, size: 0x0708090a, flags: 0x0b0c0d0e, error: 0x0f101112 };
  assert.is(toHex(encodeHeader(h)), '3412 0605 0a090807 0e0d0c0b 1211100f'.replace(/ /g, ''));
  assert.equal(decodeHeader(encodeHeader(h)), h);
});

test('encodeHeader writes into a target at an offset; decodeHeader reads at an offset', () => {
  const buf = new Uint8Array(20);
  encodeHeader({ id: 1, command: 2, size: 16, flags: 0, error: 0 }, buf, 4);
  assert.is(toHex(buf.subarray(0, 4)), '00000000');
  assert.equal(decodeHeader(buf, 4), { id: 1, command: 2, size: 16, flags: 0, error: 0 });
  assert.throws(() => encodeHeader({ id: 1, command: 2, size: 16, flags: 0, error: 0 }, buf, 5), RangeError);
});

test('decodeHeader needs 16 bytes', () => {
  throwsErrno(() => decodeHeader(new Uint8Array(15)), Errno.EINVAL, 'SHORT_HEADER');
  throwsErrno(() => decodeHeader(new Uint8Array(16), 1), Errno.EINVAL, 'SHORT_HEADER');
});

test('decodeHeader works on a view into a larger buffer', () => {
  const big = new Uint8Array(64);
  big.set(fromHex('0900 0400 20000000 00000000 00000000'), 32);
  assert.equal(decodeHeader(big.subarray(32)), { id: 9, command: 4, size: 32, flags: 0, error: 0 });
});

test('encodeHeader refuses out-of-range fields', () => {
  assert.throws(() => encodeHeader({ id: 0x10000, command: 1, size: 16, flags: 0, error: 0 }), RangeError);
  assert.throws(() => encodeHeader({ id: 1, command: 1, size: -1, flags: 0, error: 0 }), RangeError);
  assert.throws(() => encodeHeader({ id: 1.5, command: 1, size: 16, flags: 0, error: 0 }), RangeError);
});

test('encodeMessage computes size and defaults to a command', () => {
  const m = encodeMessage({ id: 3, command: Command.DEVICE_GET_INFO }, new Uint8Array([1, 2, 3]));
  assert.equal(decodeHeader(m), { id: 3, command: 4, size: 19, flags: 0, error: 0 });
  assert.is(toHex(m.subarray(16)), '010203');
  assert.is(encodeMessage({ id: 0, command: 13 }).byteLength, 16);
});

test('encodeReplyMessage sets flags 0x1', () => {
  assert.equal(decodeHeader(encodeReplyMessage(5, 2)), { id: 5, command: 2, size: 16, flags: 1, error: 0 });
});

test('HDR-22: an error reply is 16 bytes, flags 0x21, the errno, echoing id and command', () => {
  const e = encodeErrorReply(0xffff, Command.DMA_MAP, Errno.EEXIST);
  assert.is(toHex(e), 'ffff 0200 10000000 21000000 11000000'.replace(/ /g, ''));
  assert.throws(() => encodeErrorReply(1, 2, 0), RangeError);
  assert.throws(() => encodeErrorReply(1, 2, -5), RangeError);
});

test('flag predicates', () => {
  const cmd = { flags: 0x10 };
  assert.ok(isCommand(cmd));
  assert.not.ok(isReply(cmd));
  assert.not.ok(wantsReply(cmd));
  assert.ok(wantsReply({ flags: 0 }));
  assert.ok(isErrorReply({ flags: 0x21 }));
  assert.not.ok(isErrorReply({ flags: 0x20 }), 'ERROR in a command means nothing (HDR-12)');
});

test('checkHeader: size < 16, size > cap, bad type', () => {
  const h = (size: number, flags: number) => ({ id: 0, command: 4, size, flags, error: 0 });
  throwsErrno(() => checkHeader(h(15, 0), 100), Errno.EINVAL, 'BAD_MESSAGE_SIZE');
  throwsErrno(() => checkHeader(h(101, 0), 100), Errno.EINVAL, 'MESSAGE_TOO_LARGE');
  throwsErrno(() => checkHeader(h(16, 2), 100), Errno.EINVAL, 'BAD_MESSAGE_TYPE');
  checkHeader(h(100, 1), 100);
  checkHeader(h(16, 0x7fffffc0), 100); // reserved bits do not matter (HDR-11)
});

test('replyErrno: libvfio-user maps 0 and > 4096 to EINVAL', () => {
  const h = (error: number) => ({ id: 0, command: 1, size: 16, flags: 0x21, error });
  assert.is(replyErrno(h(17)), 17);
  assert.is(replyErrno(h(0)), Errno.EINVAL);
  assert.is(replyErrno(h(4097)), Errno.EINVAL);
});

test('ProtocolError carries errno, code and detail', () => {
  const e = new ProtocolError(Errno.ENOSPC, 'LIMIT_EXCEEDED', 'too many maps');
  assert.instance(e, Error);
  assert.is(e.errno, 28);
  assert.is(e.code, 'LIMIT_EXCEEDED');
  assert.is(e.detail, 'too many maps');
  assert.is(e.message, 'too many maps (ENOSPC)');
});

test('in place: plainCommandOf accepts only a plain command whose size field matches', () => {
  const m = encodeMessage({ id: 0x1234, command: Command.REGION_READ }, new Uint8Array(16));
  assert.is(plainCommandOf(m, 32), Command.REGION_READ);
  assert.is(messageIdOf(m), 0x1234);
  assert.is(plainCommandOf(m, 31), -1, 'size field differs');
  assert.is(plainCommandOf(m.subarray(0, 20), 32), -1, 'fewer bytes than the size');
  assert.is(plainCommandOf(m, 8), -1, 'below a header');
  for (const [at, v] of [
    [8, MsgFlags.NO_REPLY],
    [8, MsgFlags.TYPE_REPLY],
    [11, 0x80],
    [12, 1],
    [15, 1],
  ] as const) {
    const x = m.slice();
    x[at] = v;
    assert.is(plainCommandOf(x, 32), -1, `byte ${at} = ${v}`);
  }
});

test('in place: REGION_READ/WRITE fields read where they lie; replies equal the full encoders', () => {
  for (const offset of [0n, 0x1234n, 0xffff_ffffn, 0x1_0000_0000n, (1n << 53n) - 1n]) {
    const req = encodeMessage(
      { id: 7, command: Command.REGION_READ },
      encodeRegionReadRequest({ offset, region: 7, count: 4 }),
    );
    assert.is(regionRwOffsetOf(req), Number(offset));
    assert.is(regionRwRegionOf(req), 7);
    assert.is(regionRwCountOf(req), 4);
    const data = Uint8Array.of(1, 2, 3, 4);
    const out = new Uint8Array(64).fill(0xee);
    const n = writeRegionRwReply(out, req, data);
    assert.equal(
      out.subarray(0, n),
      encodeReplyMessage(7, Command.REGION_READ, encodeRegionReadReply({ offset, region: 7, data })),
    );
    const wreq = encodeMessage(
      { id: 9, command: Command.REGION_WRITE },
      encodeRegionWriteRequest({ offset, region: 2, data }),
    );
    const w = writeRegionRwReply(out, wreq);
    assert.equal(
      out.subarray(0, w),
      encodeReplyMessage(9, Command.REGION_WRITE, encodeRegionWriteReply({ offset, region: 2, count: 4 })),
    );
  }
  for (const offset of [1n << 53n, (1n << 64n) - 1n]) {
    const req = encodeMessage(
      { id: 7, command: Command.REGION_READ },
      encodeRegionReadRequest({ offset, region: 0, count: 4 }),
    );
    assert.is(regionRwOffsetOf(req), -1, `${offset} does not fit a number`);
  }
  const req = encodeMessage(
    { id: 1, command: Command.REGION_READ },
    encodeRegionReadRequest({ offset: 0n, region: 0, count: 8 }),
  );
  assert.throws(() => writeRegionRwReply(new Uint8Array(39), req, new Uint8Array(8)), RangeError);
});

test('writeReplyMessage: the bytes encodeReplyMessage gives, over whatever the target held; caller bugs throw', () => {
  const payloads = [undefined, new Uint8Array(0), Uint8Array.of(1, 2, 3), new Uint8Array(24).fill(7)];
  for (const payload of payloads) {
    for (const [id, command] of [
      [0, Command.DMA_MAP],
      [0xffff, Command.DMA_UNMAP],
      [0x1234, 0xffff],
    ] as const) {
      const out = new Uint8Array(64).fill(0xee);
      const n = writeReplyMessage(out, id, command, payload);
      assert.equal(out.subarray(0, n), encodeReplyMessage(id, command, payload ?? new Uint8Array(0)));
      assert.is(out[n], 0xee, 'nothing written past the reply');
    }
  }
  for (const bad of [-1, 0x10000, 1.5, Number.NaN]) {
    assert.throws(() => writeReplyMessage(new Uint8Array(16), bad, 1), /Header\.id must be a u16/);
    assert.throws(() => writeReplyMessage(new Uint8Array(16), 1, bad), /Header\.command must be a u16/);
  }
  assert.throws(() => writeReplyMessage(new Uint8Array(39), 1, 1, new Uint8Array(24)), /does not fit/);
});

test.run();
