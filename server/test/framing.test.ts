// The addon's C framing ('bulk', the default) against protocol's Framer, the pure-TypeScript reference of the same
// rule (docs/native-addon.md): over real socketpairs, a byte stream cut in two at every offset, with an fd sent
// with neither part, the first or the second, yields the same whole messages with the same number of fds on each,
// and a bad size ends both after the same messages.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as native from 'vfio-user-native';
import { Command, encodeMessage, type Frame, Framer, FramingError, MsgFlags } from 'vfio-user-protocol';

const MAX = 4096;

/** One received message: its bytes (hex) and how many fds came with it. */
type Got = { hex: string; fds: number };

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

function message(id: number, payloadLen: number, flags: number = MsgFlags.TYPE_COMMAND): Uint8Array {
  const payload = Uint8Array.from({ length: payloadLen }, (_, i) => (id * 31 + i) & 0xff);
  return encodeMessage({ id, command: Command.REGION_WRITE, flags }, payload);
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => [...p]));
}

/** What the Framer makes of the parts: the messages, and whether it refused the stream. */
function reference(parts: [Uint8Array, number][]): { got: Got[]; refused: boolean } {
  const f = new Framer({ maxMessageSize: MAX });
  const got: Got[] = [];
  const take = (frames: Frame[]) => {
    for (const fr of frames) got.push({ hex: hex(encodeMessage(fr.header, fr.payload)), fds: fr.fds.length });
  };
  try {
    // Stand-in fd numbers: the Framer only hands them on.
    for (const [bytes, fds] of parts)
      take(
        f.push(
          bytes,
          Array.from({ length: fds }, (_, i) => 1000 + i),
        ),
      );
  } catch (e) {
    if (!(e instanceof FramingError)) throw e;
    take(e.frames);
    return { got, refused: true };
  }
  return { got, refused: false };
}

/** What the addon makes of the same parts sent over a socketpair (one send each, an eventfd per fd). */
async function addon(
  parts: [Uint8Array, number][],
  expected: number,
): Promise<{ got: Got[]; refused: boolean }> {
  const [a, b] = native.socketpair();
  const rx = native.Connection.fromFd(a);
  const tx = native.Connection.fromFd(b);
  const got: Got[] = [];
  let closeErr: Error | undefined;
  let closed = false;
  rx.start(
    {
      onMessage(data, fds) {
        got.push({ hex: hex(data), fds: fds.length });
        for (const fd of fds) native.closeFd(fd);
      },
      onClose(err) {
        closed = true;
        closeErr = err;
      },
    },
    { maxMessageSize: MAX },
  );
  for (const [bytes, n] of parts) {
    const fds = Array.from({ length: n }, () => native.eventfd(0));
    tx.send(bytes, fds);
    for (const fd of fds) native.closeFd(fd);
  }
  const t0 = Date.now();
  while (got.length < expected && !closed && Date.now() - t0 < 5000)
    await new Promise((r) => setImmediate(r));
  tx.close();
  while (!closed && Date.now() - t0 < 5000) await new Promise((r) => setImmediate(r));
  rx.close();
  // An orderly EOF after whole messages closes without an error; a bad size is EPROTO.
  return { got, refused: (closeErr as { code?: string } | undefined)?.code === 'EPROTO' };
}

/** Every cut of `stream` into two parts, with one fd on neither part, on the first, or on the second. */
async function agreeAtEveryCut(stream: Uint8Array) {
  let cases = 0;
  for (let cut = 1; cut < stream.byteLength; cut++) {
    for (const fdOn of [-1, 0, 1]) {
      const parts: [Uint8Array, number][] = [
        [stream.subarray(0, cut), fdOn === 0 ? 1 : 0],
        [stream.subarray(cut), fdOn === 1 ? 1 : 0],
      ];
      const want = reference(parts);
      const have = await addon(parts, want.got.length);
      assert.equal(have, want, `cut at ${cut}, fd with part ${fdOn}`);
      cases++;
    }
  }
  return cases;
}

test('whole messages: the same messages and fds at every cut', async () => {
  const stream = concat([message(1, 0), message(2, 5), message(3, 100), message(4, 3, MsgFlags.TYPE_REPLY)]);
  assert.is(await agreeAtEveryCut(stream), 3 * (stream.byteLength - 1));
});

test('a size below the header or above the cap: the same messages before it, then both refuse', async () => {
  const small = message(6, 0);
  new DataView(small.buffer).setUint32(4, 8, true);
  const big = message(7, 0);
  new DataView(big.buffer).setUint32(4, MAX + 1, true);
  for (const bad of [small, big]) await agreeAtEveryCut(concat([message(5, 20), bad]));
});

test.run();
