// Worker-thread body for lifecycle.test.ts: opens one of everything, leaves it all open, reports 'ready'.
// The env cleanup hook must close it when the worker is terminated (or exits), without crashing the process.
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import {
  Connection,
  closeFd,
  eventfd,
  FdWatcher,
  Listener,
  MAP_SHARED,
  memfdCreate,
  mmap,
  PROT_READ,
  PROT_WRITE,
  socketpair,
  taggedEventfdsForWorker,
} from './worker-helpers.js';

const { dir, exitSelf } = workerData as { dir: string; exitSelf: boolean };
const [a, b] = socketpair();
const ca = Connection.fromFd(a);
const cb = Connection.fromFd(b);
ca.start({ onMessage() {}, onClose() {} });
cb.start({ onMessage() {}, onClose() {} });
cb.pause();
// A queued message holding duplicated fds, and a received-but-undelivered one.
ca.send(new Uint8Array(4 * 1024 * 1024).fill(1).map((v, i) => (i === 4 ? 0 : v)));
const fds = taggedEventfdsForWorker(3);
ca.send(new Uint8Array(16), fds);
for (const fd of fds) closeFd(fd); // the queue holds dups
const efd = eventfd();
new FdWatcher(efd, () => {});
const lis = Listener.listen(join(dir, `w${process.pid}-${Math.random()}.sock`));
lis.start(() => {});
const ram = memfdCreate('worker-ram', 1 << 20);
new Uint8Array(mmap(ram, 0n, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED))[0] = 1;
closeFd(ram); // the mapping stays
// efd is JS-owned (a watcher never owns its fd): the parent closes it after the worker is gone.
parentPort!.postMessage({ ready: true, leftOpen: [efd] });
if (exitSelf) process.exit(0);
