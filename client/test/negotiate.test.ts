// VERSION from the client side: what we send, and how the server's answer is judged (spec rules always, QEMU's
// limits on request), including twin-socket with a real second socket.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Connection, closeFd, openFdsBackTo, openFdsSettled, socketpair } from 'vfio-user-native';
import { NegotiationError, QEMU_VERSION_JSON, type VfioUserClient } from '../src/index.js';
import { concat, dv, FakePeer, le, msg, sleep } from './fake-peer.js';

const enc = new TextEncoder();

function versionPayload(major: number, minor: number, json?: string) {
  return concat(le([2, major], [2, minor]), json === undefined ? new Uint8Array(0) : enc.encode(json));
}

test('default proposal: 0.0 with QEMU-like capabilities and our limits', async () => {
  const { client, peer } = FakePeer.pair({ maxMsgFds: 12, maxDataXferSize: 65536 });
  const p = client.negotiate();
  const m = await peer.expect(1);
  assert.is(m.id, 0);
  assert.is(m.fds.length, 0);
  const d = dv(m.payload);
  assert.is(d.getUint16(0, true), 0);
  assert.is(d.getUint16(2, true), 0);
  assert.is(m.payload[m.payload.length - 1], 0, 'NUL-terminated');
  const caps = JSON.parse(new TextDecoder().decode(m.payload.subarray(4, m.payload.length - 1))).capabilities;
  assert.is(caps.max_msg_fds, 12);
  assert.is(caps.max_data_xfer_size, 65536);
  assert.is(caps.max_dma_maps, 65535);
  assert.is(caps.pgsizes, 4096);
  assert.is(caps.twin_socket, undefined);
  peer.replyVersion(m, { max_msg_fds: 8, max_data_xfer_size: 1048576, pgsizes: 4096 });
  const r = await p;
  assert.is(r.major, 0);
  assert.is(r.minor, 0);
  assert.is(r.capabilities.maxMsgFds, 8);
  assert.is(r.capabilities.maxDataXferSize, 1048576);
  assert.equal(r.warnings, []);
  assert.not.ok(r.twinSocket);
  client.close();
  peer.close();
});

test('QEMU byte-exact proposal is 214 bytes', async () => {
  const { client, peer } = FakePeer.pair();
  const p = client.negotiate({ capabilities: enc.encode(`${QEMU_VERSION_JSON}\0`), qemuLimits: true });
  const m = await peer.expect(1);
  assert.is(m.size, 214);
  peer.replyVersion(m);
  await p;
  client.close();
  peer.close();
});

test('no JSON at all, and a reply without JSON (spec: optional)', async () => {
  const { client, peer } = FakePeer.pair();
  const p = client.negotiate({ capabilities: null, minor: 3 });
  const m = await peer.expect(1);
  assert.is(m.size, 20);
  peer.reply(m, versionPayload(0, 2));
  const r = await p;
  assert.is(r.minor, 2);
  assert.is(r.json, undefined);
  assert.is(r.capabilities.maxMsgFds, 1, 'spec default');
  client.close();
  peer.close();
});

async function expectFailure(reply: Uint8Array, opts: Parameters<VfioUserClient['negotiate']>[0] = {}) {
  const { client, peer } = FakePeer.pair();
  const p = client.negotiate(opts);
  peer.reply(await peer.expect(1), reply);
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  client.close();
  peer.close();
  return err;
}

test('spec rules: major, minor, NUL, JSON object, types, features not offered', async () => {
  const cases: [string, Uint8Array, Parameters<VfioUserClient['negotiate']>[0]?][] = [
    ['major 1', versionPayload(1, 0, '{}\0')],
    ['minor above proposal', versionPayload(0, 1, '{}\0')],
    ['no NUL', versionPayload(0, 0, '{}')],
    ['bad JSON', versionPayload(0, 0, '{\0')],
    ['not an object', versionPayload(0, 0, '[]\0')],
    ['capabilities not an object', versionPayload(0, 0, '{"capabilities":"23"}\0')],
    ['max_msg_fds string', versionPayload(0, 0, '{"capabilities":{"max_msg_fds":"x"}}\0')],
    ['max_msg_fds negative', versionPayload(0, 0, '{"capabilities":{"max_msg_fds":-1}}\0')],
    [
      'twin_socket enabled without offer',
      versionPayload(0, 0, '{"capabilities":{"twin_socket":{"supported":true,"fd_index":0}}}\0'),
      { capabilities: { max_msg_fds: 8 } },
    ],
    [
      'write_multiple enabled without offer',
      versionPayload(0, 0, '{"capabilities":{"write_multiple":true}}\0'),
      { capabilities: { max_msg_fds: 8 } },
    ],
    ['short payload', le([2, 0])],
  ];
  for (const [name, reply, opts] of cases) {
    const err = await expectFailure(reply, opts);
    assert.instance(err, NegotiationError, name);
  }
});

test('QEMU limits: only checked in qemuLimits mode', async () => {
  const bad = [
    '{"capabilities":{"max_msg_fds":17}}',
    '{"capabilities":{"max_data_xfer_size":67108865}}',
    '{"capabilities":{"pgsizes":2048}}',
    '{"capabilities":{"max_dma_maps":65536}}',
  ];
  for (const j of bad) {
    assert.instance(
      await expectFailure(versionPayload(0, 0, `${j}\0`), { qemuLimits: true }),
      NegotiationError,
      j,
    );
    assert.is(
      await expectFailure(versionPayload(0, 0, `${j}\0`)),
      undefined,
      `${j} passes without qemuLimits`,
    );
  }
  // A reply larger than the request does not fit QEMU's buffer: fatal, like QEMU.
  const big = `{"capabilities":{"max_msg_fds":8,"x":"${'y'.repeat(300)}"}}\0`;
  const err = await expectFailure(versionPayload(0, 0, big), { qemuLimits: true });
  assert.ok(err instanceof Error && /closed/.test(err.message), String(err));
});

test('unasked limits and unknown keys are warnings, not errors', async () => {
  const { client, peer } = FakePeer.pair();
  const p = client.negotiate({ capabilities: { pgsizes: 4096 } });
  peer.replyVersion(await peer.expect(1), { max_msg_fds: 4, max_data_xfer_size: 8192, x_vendor: 1 });
  const r = await p;
  assert.is(r.capabilities.maxMsgFds, 4);
  assert.is(r.warnings.length, 3);
  client.close();
  peer.close();
});

test('twin socket: the reply fd becomes the channel for server requests', async () => {
  const before = await openFdsSettled();
  const { client, peer } = FakePeer.pair();
  const p = client.negotiate({ twinSocket: true });
  const m = await peer.expect(1);
  const caps = JSON.parse(new TextDecoder().decode(m.payload.subarray(4, m.payload.length - 1))).capabilities;
  assert.equal(caps.twin_socket, { supported: true });
  const [mine, theirs] = socketpair() as [number, number];
  peer.replyVersion(m, { max_msg_fds: 8, twin_socket: { supported: true, fd_index: 0 } }, [theirs]);
  closeFd(theirs);
  const r = await p;
  assert.ok(r.twinSocket);
  // The server side of the twin socket sends a DMA_WRITE there; the reply must come back on it.
  const got: Uint8Array[] = [];
  const twin = Connection.fromFd(mine);
  twin.start(
    { onMessage: (d: Buffer) => got.push(new Uint8Array(d)), onClose: () => {} },
    { maxMessageSize: 1 << 20 },
  );
  twin.send(msg(7, 12, 0, concat(le([8, 0x5000n], [8, 1n]), Uint8Array.of(1))));
  for (let i = 0; i < 100 && got.length === 0; i++) await sleep(5);
  assert.is(got.length, 1);
  const h = dv(got[0]!);
  assert.is(h.getUint16(0, true), 7);
  assert.is(h.getUint16(2, true), 12);
  assert.is(h.getUint32(8, true), 0x21, 'nothing mapped there: error reply');
  assert.is(h.getUint32(12, true), 14, 'EFAULT');
  assert.ok(await peer.quiet(20), 'nothing on the main socket');
  client.close();
  twin.close();
  peer.close();
  assert.is(await openFdsBackTo(before), before);
});

test('twin socket accepted with a bad fd_index: the client closes the connection', async () => {
  const { client, peer } = FakePeer.pair();
  const p = client.negotiate({ twinSocket: true });
  peer.replyVersion(await peer.expect(1), { twin_socket: { supported: true, fd_index: 1 } });
  await p.then(
    () => assert.unreachable(),
    (e) => assert.instance(e, NegotiationError),
  );
  assert.ok(client.closed);
  peer.close();
});

test.run();
