// The structural budget walk that guards migration data before msgpackr decodes it (pci/msgpack-budget.ts).
import { pack } from 'msgpackr';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  checkMsgpack,
  createEdu,
  MsgpackBudgetError,
  MsgpackBudgetWalk,
  PCI_STATE_BUDGET,
} from '../src/index.js';

const B = { maxBytes: 1 << 20, maxElements: 1000, maxDepth: 8, maxMs: 100 };
const refused = (b: Uint8Array, re: RegExp, budget = B) =>
  assert.throws(
    () => checkMsgpack(b, budget),
    (e: unknown) => e instanceof MsgpackBudgetError && re.test((e as Error).message),
  );

test('accepts what msgpackr packs: scalars, strings, bins, nested maps and arrays, a real edu state', () => {
  for (const v of [
    0,
    -1,
    1.5,
    2 ** 40,
    -(2 ** 40),
    'x',
    'y'.repeat(300),
    null,
    true,
    false,
    [],
    {},
    [[], {}],
  ]) {
    checkMsgpack(pack(v), B);
  }
  checkMsgpack(pack({ a: { b: [1, 2, { c: new Uint8Array(70000) }] }, d: 'e'.repeat(70000) }), B);
  const edu = createEdu();
  checkMsgpack(edu.migration!.saveState(), PCI_STATE_BUDGET);
});

test('a bomb header is refused before anything: counts above the element budget or the bytes left', () => {
  const t0 = performance.now();
  refused(Uint8Array.of(0xdd, 0x08, 0, 0, 0, 0x90, 0x90), /134217728 values in 2 bytes/, {
    ...B,
    maxElements: 1 << 30,
    maxBytes: 1 << 30,
  }); // 128 Mi announced, 2 bytes left
  refused(Uint8Array.of(0xdd, 0x08, 0, 0, 0, 0x90, 0x90), /element budget/);
  refused(Uint8Array.of(0xdf, 0, 0, 0x10, 0), /element budget|bytes/);
  assert.ok(performance.now() - t0 < 50);
});

test('nesting, extension types, 0xc1, containers as map keys, truncation and trailing bytes are refused', () => {
  refused(new Uint8Array(20).fill(0x91), /nesting deeper than 8/);
  refused(Uint8Array.of(0xd4, 1, 0), /extension type/);
  refused(Uint8Array.of(0xc7, 1, 5, 0), /extension type/);
  refused(Uint8Array.of(0xc1), /reserved byte/);
  refused(Uint8Array.of(0x81, 0x90, 0x01), /as a map key/);
  refused(Uint8Array.of(0x81, 0x80, 0x01), /as a map key/);
  refused(Uint8Array.of(0x81, 0xc4, 0x01, 0x00, 0x01), /as a map key/);
  checkMsgpack(Uint8Array.of(0x81, 0x01, 0x90), B); // a container as a value is fine
  refused(Uint8Array.of(0x92, 0x01), /2 values in 1 bytes/);
  refused(Uint8Array.of(0x92, 0x01, 0xc4), /more bytes/);
  refused(Uint8Array.of(0xc4, 10, 1, 2), /more bytes/);
  refused(Uint8Array.of(0x01, 0x02), /after the value/);
  refused(new Uint8Array(2000).fill(0x01), /2000 bytes, more than 100/, { ...B, maxBytes: 100 });
});

test('the element budget counts every value, nested ones included', () => {
  const ok = pack(Array.from({ length: 999 }, () => 1));
  checkMsgpack(ok, B); // 1 array + 999 values = 1000
  refused(pack(Array.from({ length: 1000 }, () => 1)), /budget|more than/);
  refused(pack(Array.from({ length: 20 }, () => Array.from({ length: 60 }, () => 0))), /budget|more than/);
});

test('in pieces (as migration data arrives): the same verdicts, and a bomb header refused by the first push', () => {
  const edu = createEdu();
  const state = edu.migration!.saveState();
  for (const step of [1, 2, 3, 5, 64, 4096]) {
    const w = new MsgpackBudgetWalk(state.length, PCI_STATE_BUDGET);
    for (let i = 0; i < state.length; i += step) w.push(state.subarray(i, i + step));
    w.end();
  }
  // 128 Mi empty arrays announced in a 128 MiB stream: refused at the header, before the elements arrive.
  const w = new MsgpackBudgetWalk(5 + (128 << 20), PCI_STATE_BUDGET);
  assert.throws(
    () => w.push(Uint8Array.of(0xdd, 0x08, 0, 0, 0, 0x90)),
    (e: unknown) => e instanceof MsgpackBudgetError && /element budget/.test((e as Error).message),
  );
  // A header split between pushes, a string split across three, then the end.
  const v = pack({ key: 'x'.repeat(300), n: 2 ** 40 });
  const pieces = new MsgpackBudgetWalk(v.length, B);
  pieces.push(v.subarray(0, 2));
  pieces.push(v.subarray(2, 100));
  pieces.push(v.subarray(100, 200));
  pieces.push(v.subarray(200));
  pieces.end();
  // Truncated: end() refuses; more than announced: push() refuses.
  const short = new MsgpackBudgetWalk(v.length, B);
  short.push(v.subarray(0, v.length - 1));
  assert.throws(
    () => short.end(),
    (e: unknown) => e instanceof MsgpackBudgetError,
  );
  const long = new MsgpackBudgetWalk(v.length, B);
  assert.throws(() => long.push(Uint8Array.from([...v, 0x01])), /after the value|more bytes/);
});

test.run();
