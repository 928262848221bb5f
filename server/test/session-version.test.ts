// VERSION negotiation through a real session over a socketpair: QEMU's request and its limits, minor
// selection, absent/small JSON and the reply-size rule, malformed input, wrong major, commands before VERSION,
// a second VERSION, fds on VERSION, and twin-socket.

import { constants } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as native from 'vfio-user-native';
import {
  Command,
  checkQemuVersionReply,
  decodeVersionReply,
  encodeDeviceGetInfoRequest,
  HEADER_SIZE,
  parseCapabilities,
} from 'vfio-user-protocol';
import { isError, isOk, startSession, versionPayload } from './session-harness.js';

const E = constants.errno;

test("QEMU's 214-byte request: reply 0.0, within 214 bytes, caps QEMU accepts", async () => {
  const rig = startSession();
  const req = versionPayload();
  assert.is(HEADER_SIZE + req.length, 214);
  const r = await rig.client.version(req);
  assert.ok(isOk(r));
  assert.ok(r.h.size <= 214, `reply is ${r.h.size} bytes`);
  const v = decodeVersionReply(r.payload, r.fds.length);
  assert.is(v.major, 0);
  assert.is(v.minor, 0);
  assert.equal(checkQemuVersionReply(214, v, 0), []);
  const caps = parseCapabilities(v.capabilities).caps;
  assert.is(caps.maxMsgFds, 16);
  assert.is(caps.maxDataXferSize, 1048576);
  assert.is(caps.twinSocket, undefined, 'QEMU did not offer twin-socket');
  assert.is(caps.writeMultiple, false, 'write_multiple is never offered back');
  assert.is(rig.device.attaches, 1);
  await rig.teardown();
  assert.is(rig.device.detaches, 1);
});

test('minor = min(client, ours); JSON-less and tiny requests get a reply no larger than themselves', async () => {
  const rig = startSession();
  let r = await rig.client.version(versionPayload('{"capabilities":{"max_msg_fds":4}}', 0, 99));
  let v = decodeVersionReply(r.payload);
  assert.is(v.minor, 2);
  assert.ok(r.h.size <= HEADER_SIZE + versionPayload('{"capabilities":{"max_msg_fds":4}}').length);
  await rig.teardown();

  // Exactly 4 bytes: the reply cannot hold any JSON (20 bytes at most).
  const rig2 = startSession();
  r = await rig2.client.version(versionPayload(null, 0, 1));
  assert.ok(isOk(r));
  assert.is(r.h.size, 20);
  v = decodeVersionReply(r.payload);
  assert.is(v.capabilities, undefined);
  assert.is(v.minor, 1);
  await rig2.teardown();

  // `{}`: still too small for `{"capabilities":{...}}`.
  const rig3 = startSession();
  r = await rig3.client.version(versionPayload('{}'));
  assert.ok(isOk(r));
  assert.ok(r.h.size <= HEADER_SIZE + 4 + 3);
  await rig3.teardown();

  // A request padded with spaces to 80 bytes gets the most important keys that fit: max_msg_fds first.
  const rig4 = startSession();
  const padded = `{"capabilities":{}}${' '.repeat(80 - HEADER_SIZE - 4 - 20)}`;
  r = await rig4.client.version(versionPayload(padded));
  assert.ok(r.h.size <= 80);
  const caps = parseCapabilities(decodeVersionReply(r.payload).capabilities).caps;
  assert.is(caps.maxMsgFds, 16);
  await rig4.teardown();
});

test('malformed VERSION is EINVAL and the client may retry; a second VERSION is EINVAL', async () => {
  const rig = startSession();
  for (const bad of [
    '{}',
    '{',
    '"',
    '{"capabilities": "23"}',
    '{"capabilities": {"max_msg_fds": -1}}',
    '[]',
  ]) {
    const payload = bad === '{}' ? versionPayload('{}').subarray(0, 6) /* no NUL */ : versionPayload(bad);
    const r = await rig.client.version(payload);
    assert.ok(isError(r, E.EINVAL), `${bad}: ${r.h.flags} ${r.h.error}`);
  }
  let r = await rig.client.request(Command.VERSION, new Uint8Array(2));
  assert.ok(isError(r, E.EINVAL), 'short payload');
  assert.not.ok(rig.client.closed);
  r = await rig.client.version();
  assert.ok(isOk(r));
  r = await rig.client.version();
  assert.ok(isError(r, E.EINVAL), 'VERSION after negotiation');
  r = await rig.client.request(Command.DEVICE_GET_INFO, encodeDeviceGetInfoRequest());
  assert.ok(isOk(r), 'still usable');
  assert.is(rig.stats.errors.EINVAL, 8);
  await rig.teardown();
});

test('a wrong major is EINVAL and closes the connection', async () => {
  const rig = startSession();
  const r = await rig.client.version(versionPayload(undefined, 1, 0));
  assert.ok(isError(r, E.EINVAL));
  await rig.session.closed;
  await until(() => rig.client.closed, 2000, 'client sees EOF');
  assert.is(rig.device.attaches, 0);
  await rig.teardown();
});

test('any other command first is EINVAL and closes the connection', async () => {
  const rig = startSession();
  const r = await rig.client.request(Command.DEVICE_GET_INFO, encodeDeviceGetInfoRequest());
  assert.ok(isError(r, E.EINVAL));
  await rig.session.closed;
  await until(() => rig.client.closed);
  await rig.teardown();
});

test('VERSION carrying an fd: EINVAL, the fd closed', async () => {
  const rig = startSession();
  const fds0 = native.openFds();
  const e = native.eventfd();
  const r = await rig.client.request(Command.VERSION, versionPayload(), { fds: [e] });
  native.closeFd(e);
  assert.ok(isError(r, E.EINVAL));
  await sleep(10);
  assert.is(native.openFds(), fds0);
  await rig.teardown();
});

test('twin-socket: offered only when asked and enough room; the client end arrives at fd_index', async () => {
  const rig = startSession();
  const ask = '{"capabilities":{"max_msg_fds":8,"twin_socket":{"supported":true},"max_data_xfer_size":4096}}';
  const r = await rig.client.version(versionPayload(ask.padEnd(160, ' ')));
  assert.ok(isOk(r));
  const v = decodeVersionReply(r.payload, r.fds.length);
  const caps = parseCapabilities(v.capabilities).caps;
  assert.equal(caps.twinSocket, { supported: true, fdIndex: 0 });
  assert.is(r.fds.length, 1);
  assert.is(native.fdInfo(r.fds[0]!).type, 'socket');
  rig.client.adoptTwin(r.fds[0]!);

  // Server->client DMA now goes over the twin socket (fd-less map, the device's DMA engine copies).
  rig.client.guest = new Uint8Array(0x10000).map((_, i) => i & 0xff);
  await rig.client.request(Command.DMA_MAP, dmaMapPayload(0n, 0x10000n, 3));
  startCopy(rig, 0x100n, 0x8000n, 10000);
  await until(() => new DataView(rig.device.bar0.buffer).getUint32(0x11c, true) !== 0, 3000, 'DMA done');
  assert.is(new DataView(rig.device.bar0.buffer).getUint32(0x11c, true), 1);
  assert.equal(
    rig.client.guest.subarray(0x8000, 0x8000 + 10000),
    rig.client.guest.subarray(0x100, 0x100 + 10000),
  );
  // Chunked by the client's 4096-byte limit: 3 reads + 3 writes, none on the main socket.
  assert.is(rig.client.serverRequests.length, 6);
  assert.ok(rig.client.serverRequests.every((m) => m.h.size <= HEADER_SIZE + 16 + 4096));
  assert.ok(
    rig.client.inbox.every((m) => m.h.command !== Command.DMA_READ && m.h.command !== Command.DMA_WRITE),
  );
  await rig.teardown();

  // max_msg_fds 0: no twin-socket (the client could not receive its fd).
  const rig2 = startSession();
  const r2 = await rig2.client.version(
    versionPayload('{"capabilities":{"max_msg_fds":0,"twin_socket":{"supported":true}}}'.padEnd(160)),
  );
  assert.is(parseCapabilities(decodeVersionReply(r2.payload).capabilities).caps.twinSocket, undefined);
  assert.is(r2.fds.length, 0);
  await rig2.teardown();
});

// Helpers shared with the dispatch tests.
import { encodeDmaMapRequest, encodeRegionWriteRequest } from 'vfio-user-protocol';
import type { SessionRig } from './session-harness.js';
import { sleep, until } from './wait.js';

function dmaMapPayload(address: bigint, size: bigint, flags: number, offset = 0n): Uint8Array {
  return encodeDmaMapRequest({ flags, offset, address, size });
}

function startCopy(rig: SessionRig, src: bigint, dst: bigint, len: number): void {
  const regs = new Uint8Array(24);
  const dv = new DataView(regs.buffer);
  dv.setBigUint64(0, src, true);
  dv.setBigUint64(8, dst, true);
  dv.setUint32(16, len, true);
  rig.client.send(Command.REGION_WRITE, encodeRegionWriteRequest({ offset: 0x108n, region: 0, data: regs }), {
    flags: 0x10,
  });
  rig.client.send(
    Command.REGION_WRITE,
    encodeRegionWriteRequest({ offset: 0x100n, region: 0, data: new Uint8Array([1, 0, 0, 0]) }),
    { flags: 0x10 },
  );
}

test.run();
