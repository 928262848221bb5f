// The wire-trace file format (round trip through the chunked parser, corrupt files) and the dissector: fields
// decoded with flags by name, error replies with their errno, replies paired with requests for latency.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Command,
  concatBytes,
  DeviceFeatureFlags,
  describeMessage,
  encodeDeviceFeatureRequest,
  encodeDmaMapRequest,
  encodeDmaUnmapRequest,
  encodeErrorReply,
  encodeMessage,
  encodeMigDeviceState,
  encodeReplyMessage,
  encodeSetIrqsRequest,
  encodeTraceFileHeader,
  encodeTraceRecordHeader,
  Feature,
  flagNames,
  formatTraceLine,
  MigState,
  MsgFlags,
  TRACE_FILE_HEADER_SIZE,
  TraceFormatError,
  TraceKind,
  TracePairer,
  TraceParser,
} from '../src/index.js';

const F = suite('trace: file format');

function record(kind: number, flags: number, fds: number, body: Uint8Array, t: bigint): Uint8Array {
  return concatBytes([encodeTraceRecordHeader(kind, flags, fds, body.length, t), body]);
}

F('header + records round trip through the parser, whatever the chunking', () => {
  const msg = encodeMessage(
    { id: 7, command: Command.DMA_MAP },
    encodeDmaMapRequest({ flags: 3, offset: 0n, address: 0x1000n, size: 0x1000n }),
  );
  const file = concatBytes([
    encodeTraceFileHeader(1_700_000_000_000_000_000n),
    record(TraceKind.SESSION_START, 0, 0, new TextEncoder().encode('{"session":1}'), 5n),
    record(TraceKind.MESSAGE, 0, 1, msg, 1000n),
    record(TraceKind.MESSAGE, 1, 0, encodeReplyMessage(7, Command.DMA_MAP), 2500n),
  ]);
  for (const chunk of [1, 3, 16, 17, 1000]) {
    const p = new TraceParser();
    const recs = [];
    for (let i = 0; i < file.length; i += chunk) recs.push(...p.push(file.subarray(i, i + chunk)));
    p.end();
    assert.is(p.header?.startNs, 1_700_000_000_000_000_000n);
    assert.equal(
      recs.map((r) => [r.kind, r.flags, r.fds, r.timeNs, r.body.length]),
      [
        [2, 0, 0, 5n, 13],
        [1, 0, 1, 1000n, msg.length],
        [1, 1, 0, 2500n, 16],
      ],
    );
    assert.equal(recs[1]!.body, msg);
  }
});

F('corrupt files: bad magic, unknown version, truncated record, absurd length', () => {
  const bad = encodeTraceFileHeader(0n);
  bad[0] = 0x58;
  assert.throws(
    () => new TraceParser().push(bad),
    (e: Error) => e instanceof TraceFormatError && /bad magic/.test(e.message),
  );
  const v2 = encodeTraceFileHeader(0n);
  v2[8] = 2;
  assert.throws(() => new TraceParser().push(v2), /version 2/);
  const p = new TraceParser();
  p.push(
    concatBytes([encodeTraceFileHeader(0n), encodeTraceRecordHeader(1, 0, 0, 100, 0n), new Uint8Array(10)]),
  );
  assert.throws(() => p.end(), /ends inside a record/);
  const huge = new TraceParser();
  assert.throws(
    () =>
      huge.push(concatBytes([encodeTraceFileHeader(0n), encodeTraceRecordHeader(1, 0, 0, 0xffffffff, 0n)])),
    /record of/,
  );
  assert.throws(() => new TraceParser().end(), /too short/);
  assert.is(TRACE_FILE_HEADER_SIZE, 32);
});

F.run();

const D = suite('trace: dissector');

D('flags by name, unknown bits in hex', () => {
  assert.is(flagNames(3, { READ: 1, WRITE: 2 }), 'READ|WRITE');
  assert.is(flagNames(0, { READ: 1 }), '0');
  assert.is(flagNames(0x11, { READ: 1 }), 'READ|0x10');
});

D('requests: DMA_MAP, DMA_UNMAP, SET_IRQS, DEVICE_FEATURE (op and feature by name), NO_REPLY', () => {
  const map = describeMessage(
    encodeMessage(
      { id: 1, command: Command.DMA_MAP },
      encodeDmaMapRequest({ flags: 1, offset: 0x2000n, address: 0x100000n, size: 0x10000n }),
    ),
    1,
  )!;
  assert.is(map.fields, 'argsz=32 flags=READ offset=0x2000 address=0x100000 size=0x10000 fds=1');
  const unmap = describeMessage(
    encodeMessage(
      { id: 2, command: Command.DMA_UNMAP },
      encodeDmaUnmapRequest({ flags: 2, address: 0n, size: 0n }),
    ),
  )!;
  assert.match(unmap.fields, /flags=ALL/);
  const irqs = describeMessage(
    encodeMessage(
      { id: 3, command: Command.DEVICE_SET_IRQS },
      encodeSetIrqsRequest({ flags: 0x24, index: 2, start: 0, count: 1 }),
    ),
    1,
  )!;
  assert.is(irqs.fields, 'argsz=20 flags=DATA_EVENTFD|ACTION_TRIGGER index=MSIX start=0 count=1 fds=1');
  const feat = describeMessage(
    encodeMessage(
      { id: 4, command: Command.DEVICE_FEATURE, flags: MsgFlags.NO_REPLY },
      encodeDeviceFeatureRequest({
        flags: DeviceFeatureFlags.SET | Feature.MIG_DEVICE_STATE,
        data: encodeMigDeviceState({ deviceState: MigState.STOP, dataFd: 0xffffffff }),
      }),
    ),
  )!;
  assert.is(feat.noReply, true);
  assert.match(feat.fields, /^argsz=\d+ flags=SET feature=MIG_DEVICE_STATE data=8B /);
});

D('replies: ok with decoded fields, error with errno; pairing gives latency; never throws on garbage', () => {
  const pairer = new TracePairer();
  const req = pairer.feed(
    1_000_000n,
    false,
    false,
    encodeMessage({ id: 9, command: Command.DEVICE_RESET }, new Uint8Array(0)),
  )!;
  assert.is(formatTraceLine(req), '    0.001000 C>S #9 DEVICE_RESET');
  const rep = pairer.feed(3_500_000n, true, false, encodeErrorReply(9, Command.DEVICE_RESET, 22))!;
  assert.is(rep.latencyNs, 2_500_000n);
  assert.is(rep.request, req);
  assert.is(formatTraceLine(rep), '    0.003500 S>C #9 DEVICE_RESET error EINVAL(22) 2.500ms');
  // A reply to nothing: no latency; a truncated body: described, not thrown.
  const orphan = pairer.feed(4_000_000n, true, false, encodeReplyMessage(10, Command.DEVICE_RESET))!;
  assert.is(orphan.latencyNs, undefined);
  const torn = describeMessage(encodeMessage({ id: 11, command: Command.DMA_MAP }, new Uint8Array(8)))!;
  assert.match(torn.fields, /^<undecodable: /);
  assert.is(describeMessage(new Uint8Array(4)), undefined);
  const unknown = describeMessage(encodeMessage({ id: 12, command: 99 }, new Uint8Array([1, 2])))!;
  assert.is(unknown.name, 'UNKNOWN(99)');
  assert.is(unknown.fields, 'payload=2B 0102');
});

D.run();
