// Request/reply matching, server requests interleaved with replies, timeouts, strictness and close handling,
// against a scripted peer on a real socketpair.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeFd, dupFd, eventfd, openFdsBackTo, openFdsSettled } from 'vfio-user-native';
import { ConnectionClosedError, VfioUserError } from '../src/index.js';
import { le, msg, negotiated } from './fake-peer.js';

const GET_INFO = 4;
const REGION_READ = 9;
const DMA_READ = 11;

function infoReply(numRegions = 9) {
  return le([4, 16], [4, 0x3], [4, numRegions], [4, 5]);
}

test('ids come from one u16 counter and replies are matched by id, out of order', async () => {
  const { client, peer } = await negotiated();
  const a = client.getDeviceInfo();
  const b = client.getDeviceInfo();
  const c = client.getDeviceInfo();
  const ma = await peer.expect(GET_INFO);
  const mb = await peer.expect(GET_INFO);
  const mc = await peer.expect(GET_INFO);
  assert.is(ma.id, 1, 'VERSION took id 0');
  assert.is(mb.id, 2);
  assert.is(mc.id, 3);
  assert.is(ma.flags, 0);
  assert.is(ma.size, 32);
  // Answer in reverse order with distinct contents.
  peer.reply(mc, infoReply(13));
  peer.reply(ma, infoReply(11));
  peer.reply(mb, infoReply(12));
  assert.is((await a).numRegions, 11);
  assert.is((await b).numRegions, 12);
  assert.is((await c).numRegions, 13);
  client.close();
  peer.close();
});

test('a server DMA_READ arriving before the reply is served, then the reply resolves', async () => {
  const { GuestMemory } = await import('../src/index.js');
  const mem = GuestMemory.create(8192);
  mem.write(100, Uint8Array.from([1, 2, 3, 4]));
  const { client, peer } = await negotiated();
  const mapping = client.mapMemory(mem, { address: 0x10000n, withFd: false });
  peer.reply(await peer.expect(2));
  await mapping;
  const read = client.regionRead(0, 0n, 4);
  const rr = await peer.expect(REGION_READ);
  // The server needs guest memory to answer: it asks first, on the same socket, with its own id.
  peer.send(msg(rr.id, DMA_READ, 0, le([8, 0x10000n + 100n], [8, 4n])));
  const dmaReply = await peer.next();
  assert.is(dmaReply.command, DMA_READ);
  assert.is(dmaReply.flags, 1);
  assert.is(
    dmaReply.id,
    rr.id,
    'the DMA reply echoes the server-chosen id, even when it equals a pending one',
  );
  assert.equal([...dmaReply.payload.subarray(16)], [1, 2, 3, 4]);
  assert.is(dmaReply.size, 16 + 16 + 4);
  peer.reply(rr, new Uint8Array([...le([8, 0n], [4, 0], [4, 4]), 9, 8, 7, 6]));
  assert.equal([...(await read)], [9, 8, 7, 6]);
  assert.is(client.dmaStats.reads, 1);
  client.close();
  peer.close();
  mem.close();
});

test('timeout rejects with ETIMEDOUT; the late reply is a violation (strict: fatal)', async () => {
  const { client, peer } = await negotiated(undefined, { timeoutMs: 50 });
  const p = client.getDeviceInfo();
  const m = await peer.expect(GET_INFO);
  try {
    await p;
    assert.unreachable('should time out');
  } catch (e) {
    assert.instance(e, VfioUserError);
    assert.is((e as VfioUserError).errno, 110);
    assert.ok((e as VfioUserError).timedOut);
  }
  const closed = client.whenClosed();
  peer.reply(m, infoReply());
  const reason = await closed;
  assert.instance(reason, ConnectionClosedError);
  assert.is(client.violations[0]?.kind, 'late-reply');
  peer.close();
});

test('lenient mode records an unsolicited reply and keeps going', async () => {
  const { client, peer } = await negotiated(undefined, { strict: false });
  peer.send(msg(999, GET_INFO, 1, infoReply()));
  const p = client.getDeviceInfo();
  const m = await peer.expect(GET_INFO);
  peer.reply(m, infoReply(10));
  assert.is((await p).numRegions, 10);
  assert.is(client.violations.length, 1);
  assert.is(client.violations[0]!.kind, 'unsolicited-reply');
  assert.not.ok(client.closed);
  client.close();
  peer.close();
});

test('strict mode: an oversize reply (QEMU: "reply larger than recv buffer") closes the connection', async () => {
  const { client, peer } = await negotiated();
  const p = client.getDeviceInfo();
  const m = await peer.expect(GET_INFO);
  peer.reply(m, new Uint8Array([...infoReply(), 0, 0, 0, 0]));
  try {
    await p;
    assert.unreachable();
  } catch (e) {
    assert.instance(e, ConnectionClosedError);
  }
  assert.is(client.violations[0]!.kind, 'oversize-reply');
  peer.close();
});

test('strict mode: an unknown message type is fatal', async () => {
  const { client, peer } = await negotiated();
  const p = client.getDeviceInfo();
  await peer.expect(GET_INFO);
  peer.send(msg(0, GET_INFO, 2, new Uint8Array(0)));
  await assertRejects(p, ConnectionClosedError);
  assert.is(client.violations[0]!.kind, 'bad-header');
  peer.close();
});

test('error replies reject with VfioUserError(errno, command); request() resolves with them', async () => {
  const { client, peer } = await negotiated();
  const p = client.getRegionInfo(3);
  peer.replyError(await peer.expect(5), 22);
  try {
    await p;
    assert.unreachable();
  } catch (e) {
    assert.instance(e, VfioUserError);
    assert.is((e as VfioUserError).errno, 22);
    assert.is((e as VfioUserError).command, 5);
    assert.is((e as VfioUserError).code, 'EINVAL');
  }
  const raw = client.request(77, Uint8Array.of(1, 2, 3));
  const m = await peer.next();
  assert.is(m.command, 77);
  assert.equal([...m.payload], [1, 2, 3]);
  peer.replyError(m, 38);
  const r = await raw;
  assert.is(r.header.error, 38);
  assert.is(r.header.flags, 0x21);
  client.close();
  peer.close();
});

test('peer closing rejects every pending request with ConnectionClosedError', async () => {
  const { client, peer } = await negotiated();
  const ps = [client.getDeviceInfo(), client.getIrqInfo(0), client.regionRead(7, 0n, 4)];
  await peer.next();
  await peer.next();
  await peer.next();
  peer.close();
  for (const p of ps) await assertRejects(p, ConnectionClosedError);
  assert.ok(client.closed);
  await assertRejects(client.getDeviceInfo(), ConnectionClosedError);
});

test('client close rejects pending requests and the peer sees EOF', async () => {
  const { client, peer } = await negotiated();
  const p = client.getDeviceInfo();
  await peer.expect(GET_INFO);
  client.close();
  await assertRejects(p, ConnectionClosedError);
  await assertRejects(peer.next(500), Error);
  assert.ok(peer.closedByClient);
  peer.close();
});

test('unknown server requests get ENOSYS; NO_REPLY ones get nothing; fds on them are closed', async () => {
  const before = await openFdsSettled();
  const { client, peer } = await negotiated();
  peer.send(msg(5, 3, 0, le([4, 24], [4, 0], [8, 0n], [8, 0n])));
  const r = await peer.next();
  assert.is(r.flags, 0x21);
  assert.is(r.error, 38);
  assert.is(r.id, 5);
  peer.send(msg(6, 3, 0x10, new Uint8Array(0)));
  assert.ok(await peer.quiet(50));
  client.close();
  peer.close();
  assert.is(await openFdsBackTo(before), before);
});

test('raw sends and observers see every message both ways', async () => {
  const { client, peer } = await negotiated();
  const seenIn: number[] = [];
  const seenOut: number[] = [];
  client.onInbound((m) => seenIn.push(m.header.command));
  client.onOutbound((m) => seenOut.push(m.header.command));
  client.sendRaw(msg(0x1234, 19, 0, Uint8Array.of(0xaa)));
  const m = await peer.next();
  assert.is(m.id, 0x1234);
  assert.is(m.command, 19);
  assert.is(m.size, 17);
  const p = client.getDeviceInfo();
  peer.reply(await peer.expect(GET_INFO), infoReply());
  await p;
  assert.equal(seenOut, [19, GET_INFO]);
  assert.equal(seenIn, [GET_INFO]);
  client.close();
  peer.close();
});

test('requests may share an id: their replies are matched in request order', async () => {
  const { client, peer } = await negotiated();
  const a = client.request(GET_INFO, le([4, 16], [4, 0], [4, 0], [4, 0]), { id: 0x7fff });
  const b = client.request(GET_INFO, le([4, 16], [4, 0], [4, 0], [4, 0]), { id: 0x7fff });
  const ma = await peer.expect(GET_INFO);
  const mb = await peer.expect(GET_INFO);
  assert.equal([ma.id, mb.id], [0x7fff, 0x7fff]);
  assert.is(client.conn.pendingCount, 2);
  peer.reply(ma, infoReply(21));
  peer.reply(mb, infoReply(22));
  assert.is(dvOf((await a).payload).getUint32(8, true), 21);
  assert.is(dvOf((await b).payload).getUint32(8, true), 22);
  assert.is(client.conn.pendingCount, 0);
  client.close();
  peer.close();
});

function dvOf(b: Uint8Array) {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

async function assertRejects(p: Promise<unknown>, type: new (...a: never[]) => Error): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, type);
    return;
  }
  assert.unreachable('expected a rejection');
}

test('a reply whose fds the kernel dropped (MSG_CTRUNC at RLIMIT_NOFILE) fails that request with EMFILE; the connection goes on', async () => {
  const { client, peer } = await negotiated();
  const before = await openFdsSettled();
  const p = client.getDeviceInfo().then(
    () => undefined,
    (e: unknown) => e,
  );
  const m = await peer.expect(GET_INFO);
  const sent = Array.from({ length: 20 }, () => eventfd());
  // Our own soft limit, lowered to leave room for a few fds: the kernel installs what fits and truncates the rest.
  const soft = /Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'))![1]!;
  const probe = dupFd(0);
  closeFd(probe);
  execFileSync('prlimit', [`--pid=${process.pid}`, `--nofile=${probe + 8}:`], { stdio: 'ignore' });
  let err: unknown;
  try {
    peer.reply(m, infoReply(), sent);
    err = await p;
  } finally {
    execFileSync('prlimit', [`--pid=${process.pid}`, `--nofile=${soft}:`], { stdio: 'ignore' });
  }
  for (const fd of sent) closeFd(fd);
  assert.ok(err instanceof VfioUserError, String(err));
  assert.is((err as VfioUserError).errno, 24, 'EMFILE');
  assert.match((err as Error).message, /MSG_CTRUNC/);
  const q = client.getDeviceInfo();
  peer.reply(await peer.expect(GET_INFO), infoReply(11));
  assert.is((await q).numRegions, 11, 'the next request is answered');
  assert.is(await openFdsBackTo(before), before, 'the fds that did arrive were closed');
  client.close();
  peer.close();
});

test.run();
