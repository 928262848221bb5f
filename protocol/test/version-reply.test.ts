// The client's judgement of a VERSION reply (judgeVersionReply): spec rules always, QEMU's limits on request,
// every problem collected; the twin socket's fd rule; reading a proposal back.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  judgeVersionReply,
  proposedCapabilities,
  QEMU_LIMITS,
  twinSocketFdProblem,
  type VersionProposal,
} from '../src/index.js';

const enc = new TextEncoder();

/** A VERSION reply payload: major, minor (u16 little-endian), then the JSON bytes as given (no NUL added). */
function payload(major: number, minor: number, json?: string): Uint8Array {
  const body = json === undefined ? new Uint8Array(0) : enc.encode(json);
  const out = new Uint8Array(4 + body.byteLength);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, major, true);
  dv.setUint16(2, minor, true);
  out.set(body, 4);
  return out;
}

const caps = (c: Record<string, unknown>) => `${JSON.stringify({ capabilities: c })}\0`;
const QEMU_OFFER: VersionProposal = {
  major: 0,
  minor: 0,
  caps: {
    max_msg_fds: 16,
    max_data_xfer_size: 1048576,
    max_dma_maps: 65535,
    pgsizes: 4096,
    migration: { pgsize: 4096, max_bitmap_size: 268435456 },
    write_multiple: true,
  },
};

test('a good reply: values adopted, keys sent listed, no problems', () => {
  const r = judgeVersionReply(
    payload(0, 0, caps({ max_msg_fds: 8, max_data_xfer_size: 65536, pgsizes: 4096, write_multiple: true })),
    QEMU_OFFER,
  );
  assert.equal(r.errors, []);
  assert.equal(r.warnings, []);
  assert.is(r.versionMismatch, false);
  assert.is(r.capabilities.maxMsgFds, 8);
  assert.is(r.capabilities.maxDataXferSize, 65536);
  assert.is(r.capabilities.maxDmaMaps, 65535, 'spec default');
  assert.ok(r.capabilities.writeMultiple);
  assert.equal(r.capabilities.present, ['max_msg_fds', 'max_data_xfer_size', 'pgsizes', 'write_multiple']);
  assert.equal(r.raw, { max_msg_fds: 8, max_data_xfer_size: 65536, pgsizes: 4096, write_multiple: true });
  assert.is(r.json, JSON.stringify({ capabilities: r.raw }));
});

test('spec rules: each malformed reply is an error', () => {
  const offerNoFeatures: VersionProposal = { major: 0, minor: 0, caps: { max_msg_fds: 8 } };
  const cases: [string, Uint8Array, VersionProposal?, number?][] = [
    ['short payload', Uint8Array.of(0, 0)],
    ['major 1', payload(1, 0, '{}\0')],
    ['minor above proposal', payload(0, 1, '{}\0')],
    ['no NUL', payload(0, 0, '{}')],
    ['embedded NUL (and so no JSON)', payload(0, 0, '{}\0\0'), QEMU_OFFER, 2],
    ['bad JSON', payload(0, 0, '{\0')],
    ['not an object', payload(0, 0, '[]\0')],
    ['capabilities not an object', payload(0, 0, '{"capabilities":"23"}\0')],
    ['max_msg_fds string', payload(0, 0, caps({ max_msg_fds: 'x' }))],
    ['max_msg_fds negative', payload(0, 0, caps({ max_msg_fds: -1 }))],
    ['max_data_xfer_size 0', payload(0, 0, caps({ max_data_xfer_size: 0 }))],
    ['pgsizes fraction', payload(0, 0, caps({ pgsizes: 4096.5 }))],
    ['migration not an object', payload(0, 0, caps({ migration: 1 }))],
    ['migration.pgsize 0', payload(0, 0, caps({ migration: { pgsize: 0 } }))],
    ['write_multiple 1', payload(0, 0, caps({ write_multiple: 1 }))],
    ['twin_socket without supported', payload(0, 0, caps({ twin_socket: {} }))],
    ['twin_socket fd_index -1', payload(0, 0, caps({ twin_socket: { supported: false, fd_index: -1 } }))],
    [
      'twin_socket enabled without offer',
      payload(0, 0, caps({ twin_socket: { supported: true, fd_index: 0 } })),
      offerNoFeatures,
    ],
    ['write_multiple enabled without offer', payload(0, 0, caps({ write_multiple: true })), offerNoFeatures],
  ];
  for (const [name, reply, offer, count] of cases) {
    const r = judgeVersionReply(reply, offer ?? QEMU_OFFER);
    assert.is(r.errors.length, count ?? 1, `${name}: ${r.errors.join('; ')}`);
  }
});

test('major and minor: both reported, first, and flagged as a version mismatch', () => {
  const r = judgeVersionReply(payload(1, 1, caps({ max_msg_fds: -1 })), QEMU_OFFER);
  assert.equal(r.errors.slice(0, 2), ['major 1 != proposed 0', 'minor 1 > proposed 0']);
  assert.is(r.errors.length, 3, 'the capability fault is reported too');
  assert.ok(r.versionMismatch);
  assert.is(judgeVersionReply(payload(0, 0, caps({ max_msg_fds: -1 })), QEMU_OFFER).versionMismatch, false);
});

test('values are held to their type only: beyond libvfio-user ranges is fine for a server', () => {
  const r = judgeVersionReply(
    payload(0, 0, caps({ max_msg_fds: 5000, max_dma_maps: 0, migration: { pgsize: 512 } })),
    QEMU_OFFER,
  );
  assert.equal(r.errors, []);
  assert.is(r.capabilities.maxMsgFds, 5000);
  assert.equal(r.capabilities.migration, { pgsize: 512 });
});

test('QEMU limits: errors only with qemuLimits, one per value', () => {
  const bad = [
    { max_msg_fds: QEMU_LIMITS.maxMsgFds + 1 },
    { max_data_xfer_size: QEMU_LIMITS.maxDataXferSize + 1 },
    { pgsizes: 2048 },
    { max_dma_maps: QEMU_LIMITS.maxDmaMaps + 1 },
    { migration: { pgsize: 6144 } },
    { migration: { max_bitmap_size: QEMU_LIMITS.maxBitmapSize + 1 } },
  ];
  for (const c of bad) {
    const j = caps(c);
    assert.is(judgeVersionReply(payload(0, 0, j), QEMU_OFFER, { qemuLimits: true }).errors.length, 1, j);
    assert.equal(
      judgeVersionReply(payload(0, 0, j), QEMU_OFFER).errors,
      [],
      `${j} passes without qemuLimits`,
    );
  }
  const noJson = judgeVersionReply(payload(0, 0), QEMU_OFFER, { qemuLimits: true });
  assert.equal(noJson.errors, []);
  assert.is(noJson.warnings.length, 1, 'QEMU needs the JSON');
  assert.equal(judgeVersionReply(payload(0, 0), QEMU_OFFER).warnings, []);
});

test('unasked limits and unknown keys are warnings; unasked features switched off too', () => {
  const r = judgeVersionReply(
    payload(0, 0, '{"capabilities":{"max_msg_fds":4,"max_data_xfer_size":8192,"x_vendor":1},"extra":2}\0'),
    { major: 0, minor: 0, caps: { pgsizes: 4096 } },
  );
  assert.equal(r.errors, []);
  assert.is(r.capabilities.maxMsgFds, 4);
  assert.equal(r.warnings, [
    'unknown top-level key "extra"',
    'capability "max_msg_fds" was not proposed',
    'capability "max_data_xfer_size" was not proposed',
    'spurious capability "x_vendor"',
  ]);
  const off = judgeVersionReply(payload(0, 0, caps({ write_multiple: false })), {
    major: 0,
    minor: 0,
    caps: {},
  });
  assert.equal(off.errors, []);
  assert.is(off.warnings.length, 1);
  // Without a readable proposal nothing counts as unasked.
  const blind = judgeVersionReply(payload(0, 0, caps({ write_multiple: true })), {
    major: 0,
    minor: 0,
    caps: undefined,
  });
  assert.equal(blind.errors, []);
  assert.equal(blind.warnings, []);
});

test('omitted keys: the spec defaults, or QEMU assumptions on request', () => {
  const spec = judgeVersionReply(payload(0, 0, caps({})), QEMU_OFFER);
  assert.is(spec.capabilities.maxMsgFds, 1);
  assert.is(spec.capabilities.migration, undefined);
  assert.equal(spec.capabilities.present, []);
  const qemu = judgeVersionReply(payload(0, 0), QEMU_OFFER, { omittedDefaults: 'qemu' });
  assert.is(qemu.capabilities.maxMsgFds, 8);
  assert.is(qemu.json, undefined);
  assert.is(
    judgeVersionReply(payload(0, 0, caps({ migration: {} })), QEMU_OFFER).capabilities.migration?.pgsize,
    4096,
  );
});

test('twin socket fds: fd_index must name a passed fd; no fds without twin-socket', () => {
  assert.is(twinSocketFdProblem({ supported: true, fdIndex: 0 }, 1), undefined);
  assert.ok(twinSocketFdProblem({ supported: true, fdIndex: 1 }, 1));
  assert.ok(twinSocketFdProblem({ supported: true }, 1));
  assert.ok(twinSocketFdProblem(undefined, 1));
  assert.ok(twinSocketFdProblem({ supported: false, fdIndex: 0 }, 1));
  assert.is(twinSocketFdProblem({ supported: false }, 0), undefined);
  assert.is(twinSocketFdProblem(undefined, 0), undefined);
});

test('proposedCapabilities reads a proposal back, NUL or not; anything unreadable is undefined', () => {
  assert.equal(proposedCapabilities(enc.encode('{"capabilities":{"pgsizes":4096}}\0')), { pgsizes: 4096 });
  assert.equal(proposedCapabilities(enc.encode('{"capabilities":{}}')), {});
  assert.is(proposedCapabilities(undefined), undefined);
  assert.is(proposedCapabilities(new Uint8Array(0)), undefined);
  assert.is(proposedCapabilities(enc.encode('{\0')), undefined);
  assert.is(proposedCapabilities(enc.encode('{"capabilities":[]}\0')), undefined);
  assert.is(proposedCapabilities(enc.encode('null\0')), undefined);
});

test.run();
