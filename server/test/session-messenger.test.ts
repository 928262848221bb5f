// The server->client DMA messenger on its own: ids skip pending ones, chunking, reply tolerance (16/12/0-byte
// DMA_WRITE replies, QEMU 10.1's DMA_READ layout), mismatched and late replies, timeouts, close.

import { constants } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Command,
  decodeDmaReadRequest,
  decodeDmaWriteRequest,
  decodeHeader,
  encodeDmaReadReply,
  encodeDmaWriteReply,
  HEADER_SIZE,
  type Header,
  MsgFlags,
} from 'vfio-user-protocol';
import { DmaError } from '../src/dma/errors.js';
import { DmaMessenger } from '../src/session/messenger.js';

const E = constants.errno;
const silent = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

function rig(maxDataXferSize = 4096, timeoutMs = 1000) {
  const sent: { h: Header; payload: Uint8Array }[] = [];
  const m = new DmaMessenger({
    send: (bytes) => {
      sent.push({ h: decodeHeader(bytes), payload: bytes.slice(HEADER_SIZE) });
    },
    maxDataXferSize,
    timeoutMs,
    log: silent,
  });
  const reply = (i: number, payload: Uint8Array, flags: number = MsgFlags.TYPE_REPLY, error = 0) => {
    const s = sent[i]!;
    return m.handleReply(
      { id: s.h.id, command: s.h.command, size: HEADER_SIZE + payload.length, flags, error },
      payload,
    );
  };
  return { m, sent, reply };
}

async function rejects(p: Promise<unknown>, errno: number): Promise<DmaError> {
  try {
    await p;
  } catch (err) {
    assert.instance(err, DmaError);
    assert.is((err as DmaError).errno, errno, (err as Error).message);
    return err as DmaError;
  }
  assert.unreachable(`should fail with ${errno}`);
  throw new Error('unreachable');
}

test('reads are chunked and reassembled; replies may come in any order', async () => {
  const { m, sent, reply } = rig(4096);
  const p = m.read(0x10000n, 10000);
  assert.is(sent.length, 3);
  const reqs = sent.map((s) => decodeDmaReadRequest(s.payload));
  assert.equal(
    reqs.map((r) => [r.address, r.count]),
    [
      [0x10000n, 4096n],
      [0x11000n, 4096n],
      [0x12000n, 1808n],
    ],
  );
  assert.is(new Set(sent.map((s) => s.h.id)).size, 3, 'distinct ids');
  for (const i of [2, 0, 1]) {
    const r = reqs[i]!;
    assert.ok(
      reply(i, encodeDmaReadReply({ address: r.address, data: new Uint8Array(Number(r.count)).fill(i + 1) })),
    );
  }
  const data = await p;
  assert.is(data.length, 10000);
  assert.equal([data[0], data[4096], data[9999]], [1, 2, 3]);
  assert.is(m.inflight, 0);
});

test('DMA_WRITE replies: 16 bytes, the 12-byte erratum, and header-only are all accepted', async () => {
  const { m, sent, reply } = rig(4);
  const p = m.write(0x100n, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]));
  assert.is(sent.length, 3);
  assert.equal(decodeDmaWriteRequest(sent[1]!.payload).data, new Uint8Array([5, 6, 7, 8]));
  reply(0, encodeDmaWriteReply({ address: 0x100n, count: 4n }));
  const erratum = new Uint8Array(12);
  new DataView(erratum.buffer).setBigUint64(0, 0x104n, true);
  new DataView(erratum.buffer).setUint32(8, 4, true);
  reply(1, erratum);
  reply(2, new Uint8Array(0));
  await p;
});

test("QEMU 10.1's DMA_READ reply layout (u64 offset, u32 count, data at +12) is accepted", async () => {
  const { m, reply } = rig();
  const p = m.read(0x2000n, 4);
  const r = new Uint8Array(16);
  const dv = new DataView(r.buffer);
  dv.setBigUint64(0, 0x2000n, true);
  dv.setUint32(8, 4, true);
  r.set([9, 8, 7, 6], 12);
  reply(0, r);
  assert.equal(await p, new Uint8Array([9, 8, 7, 6]));
});

test('error replies, bad echoes, unknown ids, timeouts and close', async () => {
  // The messenger's timers are unref'd (they must not keep a server alive): hold the loop open meanwhile.
  const keep = setInterval(() => {}, 1000);
  const { m, sent, reply } = rig(4096, 50);
  let p: Promise<unknown> = m.read(0n, 8);
  reply(0, new Uint8Array(0), MsgFlags.TYPE_REPLY | MsgFlags.ERROR, E.EFAULT);
  let e = await rejects(p, E.EFAULT);
  assert.is(e.kind, 'io');
  p = m.read(0n, 8);
  reply(1, encodeDmaReadReply({ address: 0x1000n, data: new Uint8Array(8) }));
  await rejects(p, E.EPROTO);
  // A reply nobody waits for (unknown id, or the wrong command) is ignored.
  assert.not.ok(
    m.handleReply({ id: 999, command: Command.DMA_READ, size: 16, flags: 1, error: 0 }, new Uint8Array(0)),
  );
  p = m.read(0n, 8);
  assert.not.ok(
    m.handleReply(
      { id: sent[2]!.h.id, command: Command.DMA_WRITE, size: 16, flags: 1, error: 0 },
      new Uint8Array(0),
    ),
  );
  e = await rejects(p, E.ETIMEDOUT);
  assert.is(m.stats.timeouts, 1);
  // The late reply after the timeout is ignored too.
  assert.not.ok(reply(2, encodeDmaReadReply({ address: 0n, data: new Uint8Array(8) })));
  p = m.write(0n, new Uint8Array(4));
  m.close();
  await rejects(p, E.ENOTCONN);
  await rejects(m.read(0n, 4), E.ENOTCONN);
  assert.is(m.stats.unexpected, 3);
  clearInterval(keep);
});

test('ids skip requests still pending; all 65,536 in flight is EBUSY', async () => {
  const { m, sent, reply } = rig(1);
  const answer = (i: number) =>
    reply(
      i,
      encodeDmaReadReply({
        address: decodeDmaReadRequest(sent[i]!.payload).address,
        data: new Uint8Array(1),
      }),
    );
  const first = m.read(0n, 1); // id 0, left pending
  const many: Promise<unknown>[] = [];
  for (let i = 1; i <= 0xffff; i++) many.push(m.read(BigInt(i), 1)); // ids 1..0xffff
  await rejects(m.read(0n, 1), E.EBUSY);
  for (let i = 1; i < sent.length; i++) answer(i);
  await Promise.all(many);
  const last = m.read(0n, 1); // the counter wrapped to 0, which is still pending
  assert.is(sent.at(-1)!.h.id, 1);
  answer(sent.length - 1);
  answer(0);
  await Promise.all([first, last]);
});

test.run();
