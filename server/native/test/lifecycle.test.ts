// Build variant selection, and worker-thread teardown through the env cleanup hook.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { addonPath, buildVariant, closeFd, openFds } from '../lib/index.js';
import { here, sleep, ticks, withTimeout } from './helpers.js';

const T = suite('native: lifecycle');

T('the requested build is loaded (VFIO_USER_NATIVE_BUILD=asan selects build/asan)', () => {
  const asan = process.env.VFIO_USER_NATIVE_BUILD === 'asan';
  assert.is(buildVariant, asan ? 'asan' : 'release');
  assert.match(
    addonPath,
    asan ? /\/build\/asan\/vfio_user_native\.node$/ : /\/build\/Release\/vfio_user_native\.node$/,
  );
  const maps = readFileSync('/proc/self/maps', 'utf8');
  assert.ok(maps.includes(addonPath), 'the addon file is mapped');
  assert.is(/libasan\.so/.test(maps), asan, 'ASan runtime present exactly in the asan run');
});

for (const exitSelf of [false, true]) {
  T(
    `a worker that ${exitSelf ? 'exits' : 'is terminated'} with everything open releases it (cleanup hook)`,
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'vu-worker-'));
      await ticks(2);
      const before = openFds();
      const w = new Worker(join(here, 'worker.js'), { workerData: { dir, exitSelf } });
      const ready = new Promise<{ leftOpen: number[] }>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      const exited = new Promise<number>((resolve) => w.once('exit', resolve));
      const { leftOpen } = await withTimeout(ready, 10000, 'worker ready');
      if (!exitSelf) await w.terminate();
      await withTimeout(exited, 10000, 'worker exit');
      for (const fd of leftOpen) closeFd(fd);
      let after = openFds();
      for (let i = 0; i < 100 && after !== before; i++) {
        await sleep(10);
        after = openFds();
      }
      // Addon-owned: 2 sockets, 3 queued dups, the listener. The worker's own loop fds are Node's.
      assert.is(after, before, `fds before ${before}, after ${after}`);
      rmSync(dir, { recursive: true, force: true });
    },
  );
}

T.run();
