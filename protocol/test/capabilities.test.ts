// The VERSION capabilities JSON, negotiation (server and client side) and the QEMU fit check.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  checkQemuVersionReply,
  checkVersionReply,
  DEFAULT_CAPABILITIES,
  Errno,
  encodeCapabilities,
  HEADER_SIZE,
  negotiateVersion,
  PROTOCOL_VERSION,
  parseCapabilities,
  QEMU_LIMITS,
  type VersionRequest,
} from '../src/index.js';
import { nul, throwsErrno } from './helpers.js';
import { QEMU_VERSION_JSON } from './vectors/version.js';

const text = (b: Uint8Array | undefined) => new TextDecoder().decode(b);
const QEMU_REQUEST: VersionRequest = { major: 0, minor: 0, capabilities: nul(QEMU_VERSION_JSON) };
const QEMU_REQUEST_SIZE = 214;

test('absent JSON gives the spec defaults (VER-07)', () => {
  assert.equal(parseCapabilities(undefined), { caps: DEFAULT_CAPABILITIES, unknownKeys: [] });
  assert.equal(parseCapabilities(new Uint8Array(0)).caps, DEFAULT_CAPABILITIES);
  assert.equal(DEFAULT_CAPABILITIES, {
    maxMsgFds: 1,
    maxDataXferSize: 1048576,
    pgsizes: 4096,
    maxDmaMaps: 65535,
    writeMultiple: false,
  });
});

test('absent keys keep their defaults; a top level without "capabilities" is all defaults', () => {
  assert.equal(parseCapabilities(nul('{"capabilities": {"max_msg_fds": 8}}')).caps, {
    ...DEFAULT_CAPABILITIES,
    maxMsgFds: 8,
  });
  assert.equal(parseCapabilities(nul('{}')).caps, DEFAULT_CAPABILITIES);
});

test('a present migration object fills its missing keys with 4 KiB / 256 MiB', () => {
  assert.equal(parseCapabilities(nul('{"capabilities": {"migration": {}}}')).caps.migration, {
    pgsize: 4096,
    maxBitmapSize: 268435456,
  });
});

test('twin_socket parses with and without fd_index', () => {
  assert.equal(
    parseCapabilities(nul('{"capabilities": {"twin_socket": {"supported": true}}}')).caps.twinSocket,
    {
      supported: true,
    },
  );
  assert.equal(
    parseCapabilities(nul('{"capabilities": {"twin_socket": {"supported": true, "fd_index": 0}}}')).caps
      .twinSocket,
    { supported: true, fdIndex: 0 },
  );
  throwsErrno(
    () => parseCapabilities(nul('{"capabilities": {"twin_socket": {"supported": true, "fd_index": -1}}}')),
    Errno.EINVAL,
  );
});

test('unknown keys are reported, at every level (VER-25)', () => {
  const { unknownKeys } = parseCapabilities(
    nul(
      '{"capabilities": {"x_vendor": 1, "migration": {"foo": 2}, "twin_socket": {"bar": 3}}, "extra": true}',
    ),
  );
  assert.equal(unknownKeys.sort(), ['/extra', 'migration.foo', 'twin_socket.bar', 'x_vendor']);
});

test('type and range violations are EINVAL', () => {
  for (const json of [
    '{"capabilities": null}',
    '{"capabilities": []}',
    '{"capabilities": {"max_msg_fds": 1.5}}',
    '{"capabilities": {"max_msg_fds": true}}',
    '{"capabilities": {"max_data_xfer_size": 0}}',
    '{"capabilities": {"max_data_xfer_size": 18446744073709551616}}',
    '{"capabilities": {"pgsizes": 0}}',
    '{"capabilities": {"max_dma_maps": 0}}',
    '{"capabilities": {"migration": {"pgsize": 12288}}}',
    '{"capabilities": {"migration": {"max_bitmap_size": "big"}}}',
    '{"capabilities": {"write_multiple": 1}}',
    'null',
    '42',
    '',
  ]) {
    throwsErrno(() => parseCapabilities(nul(json)), Errno.EINVAL);
  }
});

test('NUL handling: required at the end, trailing NUL padding tolerated, nothing else after it', () => {
  throwsErrno(() => parseCapabilities(new TextEncoder().encode('{}')), Errno.EINVAL, 'BAD_JSON');
  assert.equal(parseCapabilities(nul('{}\0\0')).caps, DEFAULT_CAPABILITIES);
  throwsErrno(() => parseCapabilities(nul('{}\0x')), Errno.EINVAL, 'BAD_JSON');
  throwsErrno(() => parseCapabilities(Uint8Array.from([0x7b, 0xff, 0x7d, 0])), Errno.EINVAL, 'BAD_JSON');
});

test('hostile JSON (deep nesting, __proto__) is handled', () => {
  throwsErrno(() => parseCapabilities(nul(`${'['.repeat(100000)}${']'.repeat(100000)}`)), Errno.EINVAL);
  const { caps, unknownKeys } = parseCapabilities(nul('{"capabilities": {"__proto__": {"max_msg_fds": 9}}}'));
  assert.is(caps.maxMsgFds, 1);
  assert.equal(unknownKeys, ['__proto__']);
});

test('encodeCapabilities: compact, table order, only given keys, NUL-terminated', () => {
  const out = encodeCapabilities({
    writeMultiple: true,
    maxMsgFds: 8,
    maxDataXferSize: 1048576,
    migration: { pgsize: 4096, maxBitmapSize: 268435456 },
  });
  assert.is(out[out.byteLength - 1], 0);
  assert.is(
    text(out.subarray(0, -1)),
    '{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576,"migration":{"pgsize":4096,"max_bitmap_size":268435456},"write_multiple":true}}',
  );
  assert.is(text(encodeCapabilities({}).subarray(0, -1)), '{"capabilities":{}}');
});

test('encodeCapabilities refuses values parseCapabilities would reject', () => {
  assert.throws(() => encodeCapabilities({ maxMsgFds: 2000 }), RangeError);
  assert.throws(() => encodeCapabilities({ migration: { pgsize: 4095, maxBitmapSize: 1 } }), RangeError);
});

test('encode then parse round-trips', () => {
  const caps = {
    maxMsgFds: 16,
    maxDataXferSize: 4096,
    pgsizes: 0x201000,
    maxDmaMaps: 100,
    migration: { pgsize: 65536, maxBitmapSize: 1024 },
    twinSocket: { supported: true, fdIndex: 0 },
    writeMultiple: true,
  };
  assert.equal(parseCapabilities(encodeCapabilities(caps)), { caps, unknownKeys: [] });
});

// ---- server-side negotiation --------------------------------------------------------------------------------
const SERVER = { capabilities: { maxMsgFds: 8, maxDataXferSize: 1048576 } };

test('VER-06: QEMU proposes 0.0 and gets 0.0 with a fitting reply', () => {
  const n = negotiateVersion(QEMU_REQUEST, SERVER);
  assert.is(n.reply.major, 0);
  assert.is(n.reply.minor, 0);
  assert.is(n.client.maxMsgFds, 16);
  assert.is(n.twinSocket, false);
  assert.is(n.writeMultiple, false);
  assert.equal(checkQemuVersionReply(QEMU_REQUEST_SIZE, n.reply), []);
  assert.is(
    text(n.reply.capabilities).replace(/\0$/, ''),
    '{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576}}',
  );
});

test('VER-05: a client proposing 0.99 gets our highest minor', () => {
  assert.is(negotiateVersion({ major: 0, minor: 99 }, SERVER).reply.minor, PROTOCOL_VERSION.minor);
});

test('VER-04: another major is EINVAL', () => {
  throwsErrno(() => negotiateVersion({ major: 1, minor: 0 }, SERVER), Errno.EINVAL, 'VERSION_MISMATCH');
  throwsErrno(() => negotiateVersion({ major: 999, minor: 0 }, SERVER), Errno.EINVAL, 'VERSION_MISMATCH');
});

test('VER-07: no JSON means the client receives 1 fd and 1 MiB', () => {
  const n = negotiateVersion({ major: 0, minor: 0 }, SERVER);
  assert.is(n.client.maxMsgFds, 1);
  assert.is(n.client.maxDataXferSize, 1048576);
});

test('write_multiple is offered only to a client that offered it', () => {
  const server = { capabilities: { ...SERVER.capabilities, writeMultiple: true } };
  assert.is(negotiateVersion(QEMU_REQUEST, server).writeMultiple, true);
  assert.ok(
    text(negotiateVersion(QEMU_REQUEST, server).reply.capabilities).includes('"write_multiple":true'),
  );
  const plain = negotiateVersion({ major: 0, minor: 0 }, server);
  assert.is(plain.writeMultiple, false);
  assert.not.ok(text(plain.reply.capabilities).includes('write_multiple'));
});

test('VER-23/24: twin-socket only when asked and the client can receive an fd', () => {
  const server = { capabilities: { ...SERVER.capabilities, twinSocket: { supported: true } } };
  const asks = (fds: number): VersionRequest => ({
    major: 0,
    minor: 0,
    capabilities: nul(`{"capabilities": {"max_msg_fds": ${fds}, "twin_socket": {"supported": true}}}`),
  });
  const yes = negotiateVersion(asks(1), server);
  assert.is(yes.twinSocket, true);
  assert.equal(parseCapabilities(yes.reply.capabilities).caps.twinSocket, { supported: true, fdIndex: 0 });
  assert.is(negotiateVersion(asks(0), server).twinSocket, false);
  assert.is(negotiateVersion(QEMU_REQUEST, server).twinSocket, false, 'QEMU never offers it');
  assert.equal(checkQemuVersionReply(QEMU_REQUEST_SIZE, negotiateVersion(QEMU_REQUEST, server).reply), []);
});

test('negotiation rejects malformed client JSON with EINVAL', () => {
  throwsErrno(() => negotiateVersion({ major: 0, minor: 0, capabilities: nul('[]') }, SERVER), Errno.EINVAL);
});

// ---- client-side checks -------------------------------------------------------------------------------------
test('checkVersionReply accepts a good reply and returns the server caps', () => {
  const r = checkVersionReply(QEMU_REQUEST, negotiateVersion(QEMU_REQUEST, SERVER).reply);
  assert.is(r.server.maxMsgFds, 8);
  assert.is(r.twinSocketFdIndex, undefined);
});

test('CLI-02: a reply with another major or a higher minor is refused', () => {
  throwsErrno(
    () => checkVersionReply(QEMU_REQUEST, { major: 1, minor: 0 }),
    Errno.EINVAL,
    'VERSION_MISMATCH',
  );
  throwsErrno(
    () => checkVersionReply(QEMU_REQUEST, { major: 0, minor: 1 }),
    Errno.EINVAL,
    'VERSION_MISMATCH',
  );
});

test('VER-27: capabilities the client did not offer are refused', () => {
  const twin = nul('{"capabilities": {"twin_socket": {"supported": true, "fd_index": 0}}}');
  throwsErrno(
    () => checkVersionReply(QEMU_REQUEST, { major: 0, minor: 0, capabilities: twin }, 1),
    Errno.EINVAL,
    'NEGOTIATION',
  );
  const wm = nul('{"capabilities": {"write_multiple": true}}');
  throwsErrno(
    () => checkVersionReply({ major: 0, minor: 0 }, { major: 0, minor: 0, capabilities: wm }),
    Errno.EINVAL,
  );
  assert.ok(checkVersionReply(QEMU_REQUEST, { major: 0, minor: 0, capabilities: wm }).writeMultiple);
});

test('twin_socket with a missing or out-of-range fd_index, or fds without twin-socket, is refused', () => {
  const offer: VersionRequest = {
    major: 0,
    minor: 0,
    capabilities: nul('{"capabilities": {"twin_socket": {"supported": true}}}'),
  };
  const noIndex = nul('{"capabilities": {"twin_socket": {"supported": true}}}');
  throwsErrno(() => checkVersionReply(offer, { major: 0, minor: 0, capabilities: noIndex }, 1), Errno.EINVAL);
  const index1 = nul('{"capabilities": {"twin_socket": {"supported": true, "fd_index": 1}}}');
  throwsErrno(() => checkVersionReply(offer, { major: 0, minor: 0, capabilities: index1 }, 1), Errno.EINVAL);
  const ok = nul('{"capabilities": {"twin_socket": {"supported": true, "fd_index": 0}}}');
  assert.is(checkVersionReply(offer, { major: 0, minor: 0, capabilities: ok }, 1).twinSocketFdIndex, 0);
  throwsErrno(() => checkVersionReply(offer, { major: 0, minor: 0 }, 1), Errno.EINVAL);
});

test('VER-33: a reply with max_msg_fds to a client that sent no JSON is fine', () => {
  checkVersionReply({ major: 0, minor: 0 }, negotiateVersion({ major: 0, minor: 0 }, SERVER).reply);
});

// ---- QEMU fit ------------------------------------------------------------------------------------------------
test('VER-28 / CLI-01: a reply larger than the 214-byte request does not fit', () => {
  const json = `{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576,"x_pad":"${'x'.repeat(120)}"}}`;
  const reply = { major: 0, minor: 0, capabilities: nul(json) };
  assert.is(HEADER_SIZE + 4 + reply.capabilities.byteLength, 215);
  assert.equal(checkQemuVersionReply(QEMU_REQUEST_SIZE, reply), [
    'reply is 215 bytes, more than the 214-byte request',
  ]);
  const fits = { major: 0, minor: 0, capabilities: nul(json.replace('x"', '"')) };
  assert.equal(checkQemuVersionReply(QEMU_REQUEST_SIZE, fits), []);
});

test('CLI-03: values past QEMU_LIMITS are reported', () => {
  const reply = {
    major: 0,
    minor: 0,
    capabilities: encodeCapabilities({
      maxMsgFds: QEMU_LIMITS.maxMsgFds + 1,
      maxDataXferSize: QEMU_LIMITS.maxDataXferSize + 1,
      pgsizes: 0x800,
      maxDmaMaps: 65536,
    }),
  };
  assert.is(checkQemuVersionReply(QEMU_REQUEST_SIZE, reply).length, 4);
});

test('CLI-02/04: wrong version, missing JSON and missing keys are reported', () => {
  assert.is(checkQemuVersionReply(214, { major: 0, minor: 1, capabilities: nul('{}') }).length, 3);
  assert.equal(checkQemuVersionReply(214, { major: 0, minor: 0 }), ['no capabilities JSON']);
  assert.equal(checkQemuVersionReply(214, { major: 0, minor: 0, capabilities: nul('{') }).length, 1);
});
test.run();
