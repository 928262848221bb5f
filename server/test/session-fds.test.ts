// FdBag, the fds of one message: one owner per fd, whatever is not taken is closed once.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as native from 'vfio-user-native';
import { FdBag } from '../src/session/fds.js';

function openFds(): number {
  return native.openFds();
}

test('a copying bag leaves the caller its array; a taking bag owns it; both close what is left once', () => {
  const before = openFds();
  const a = native.memfdCreate('bag-a', 4096);
  const b = native.memfdCreate('bag-b', 4096);
  const given = [a, b];
  const copied = new FdBag(given);
  assert.is(copied.take(0), a);
  assert.equal(given, [a, b], 'the caller array is untouched');
  copied.closeRest(); // closes b
  copied.closeRest(); // nothing left: closes nothing twice
  assert.is(openFds(), before + 1, 'b closed, a taken');
  const mine = [a];
  const taking = FdBag.taking(mine);
  assert.is(taking.count, 1);
  taking.closeRest();
  assert.equal(mine, [undefined], 'the array itself was the bag');
  assert.is(openFds(), before);
});

test('FdBag.NONE: shared, empty, and refuses an fd rather than carry it to another message', () => {
  const none = FdBag.NONE;
  assert.is(none.count, 0);
  assert.equal(none.takeAll(), []);
  assert.equal(none.peek(), []);
  none.closeRest();
  assert.throws(() => none.take(0), /already taken or absent/);
  assert.throws(() => none.adopt(1000), TypeError);
  assert.is(none.count, 0);
});

test.run();
