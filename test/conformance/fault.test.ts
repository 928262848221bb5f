// Self-test of the conformance suite: a fault-injecting proxy in front of our real server must make exactly the
// matching cases FAIL (so the cases can fail), while the same proxy without a fault passes.
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  type CliResult,
  failures,
  proxyCommand,
  runCli,
  serverCommand,
  startServer,
  stopServer,
  tempDir,
} from './helpers.js';

const t = suite('conformance self-test (fault proxy)');
let dir = '';
let upstream = '';
let server: ChildProcess | undefined;

t.before(async () => {
  dir = tempDir();
  upstream = join(dir, 'upstream.sock');
  server = await startServer(serverCommand('edu'), upstream);
});

t.after(async () => {
  if (server) await stopServer(server);
  rmSync(dir, { recursive: true, force: true });
});

async function withFault(mode: string, only: string, profile = 'spec'): Promise<CliResult> {
  return runCli([
    '--socket-path',
    join(dir, `proxy-${mode.replace(':', '-')}.sock`),
    '--spawn',
    proxyCommand(upstream, mode),
    '--only',
    only,
    '--profile',
    profile,
    '--timeout',
    '1000',
  ]);
}

function mustFail(r: CliResult, ids: string[]): void {
  for (const id of ids) {
    const c = r.byId.get(id);
    assert.ok(c, `${id} ran`);
    assert.is(c.status, 'FAIL', `${id} should fail under the fault (got ${c.status}: ${c.reason})`);
  }
  assert.is(r.code, 1, 'exit code 1 when a case fails');
}

function mustPass(r: CliResult, ids: string[]): void {
  for (const id of ids)
    assert.is(r.byId.get(id)?.status, 'PASS', `${id} should still pass (${r.byId.get(id)?.reason})`);
}

t('no fault: the proxy itself passes', async () => {
  const r = await withFault('none', 'VER,HDR,INF,IRQS,MAP,UNM,RST');
  assert.is(r.report.summary.failed, 0, failures(r));
  assert.is(r.code, 0);
});

t('errno rewritten: the cases holding a spec errno fail (spec profile)', async () => {
  const r = await withFault('errno', 'MAP,INF');
  mustFail(r, ['MAP-10', 'MAP-11', 'MAP-12', 'MAP-13', 'MAP-14']);
  mustPass(r, ['MAP-01', 'INF-01']);
});

t(
  'errno rewritten: libvfio-user errnos are held (lvu profile: WARN, a legal choice), not judged (spec)',
  async () => {
    const lvu = await withFault('errno', 'INF,RGN,IRQI', 'lvu');
    for (const id of ['INF-02', 'INF-03', 'RGN-02', 'RGN-04', 'IRQI-04']) {
      assert.is(lvu.byId.get(id)?.status, 'WARN', `${id} under lvu (${lvu.byId.get(id)?.reason})`);
      assert.match(lvu.byId.get(id)!.reason, /libvfio-user answers EINVAL/);
    }
    mustPass(lvu, ['INF-01', 'RGN-01']);
    assert.is(lvu.code, 0, 'WARN does not fail a run');
    const spec = await withFault('errno', 'INF-02,RGN-04');
    mustPass(spec, ['INF-02', 'RGN-04']);
  },
);

t('a reply to NO_REPLY commands fails the posted-command cases', async () => {
  const r = await withFault('reply-noreply', 'HDR,RW,UNM,MAP,RST,CFG');
  mustFail(r, ['HDR-17', 'HDR-27', 'HDR-31', 'RW-14', 'RW-15', 'UNM-21', 'MAP-27', 'RST-06', 'CFG-23']);
  mustPass(r, ['HDR-01', 'RW-02']);
});

t('fds kept by the "server" fail the fd-leak cases', async () => {
  const r = await withFault('leak-fds', 'VER,HDR,IRQS,UNM,LIFE');
  mustFail(r, ['VER-03', 'HDR-24', 'HDR-25', 'IRQS-23', 'IRQS-24', 'IRQS-36', 'UNM-19', 'LIFE-01']);
  mustPass(r, ['HDR-01', 'VER-06']);
});

t('oversized replies fail the reply-size cases', async () => {
  // GET_INFO, GET_IRQ_INFO and REGION_WRITE replies only (discovery needs sane region info and reads).
  const r = await withFault('oversize:4,7,10', 'INF,IRQI,RW');
  mustFail(r, ['INF-01', 'INF-04', 'IRQI-01', 'IRQI-05', 'RW-22']);
  mustPass(r, ['RW-01', 'RW-19']);
});

t('a dropped reply fails the cases waiting for it', async () => {
  const r = await withFault('drop-reply:13', 'RST,INF');
  mustFail(r, ['RST-01', 'RST-04', 'INF-06']);
  mustPass(r, ['INF-01']);
});

t('fds on server DMA requests fail the server-DMA cases', async () => {
  const r = await withFault('dma-fds', 'SDMA');
  mustFail(r, ['SDMA-01', 'SDMA-03', 'SDMA-04']);
  assert.match(r.byId.get('SDMA-03')!.reason, /fd/);
});

t(
  'a server killed by a signal is a crash: the case fails, and the server is restarted for the next',
  async () => {
    const r = await withFault('crash:13', 'RST,INF');
    mustFail(r, ['RST-01']);
    assert.match(r.byId.get('RST-01')!.reason, /killed by SIGSEGV \(crash\)/);
    mustPass(r, ['INF-01', 'INF-07']);
  },
);

t(
  'a server that exits with a code instead of answering: the missing reply fails, the exit is an exit',
  async () => {
    const r = await withFault('exit:13', 'RST-01,INF-01');
    mustFail(r, ['RST-01']);
    assert.match(r.byId.get('RST-01')!.reason, /connection closed with no reply/);
    assert.not.match(r.byId.get('RST-01')!.reason, /crash/);
    assert.is(r.byId.get('RST-01')!.exit, 'exited with code 70');
    mustPass(r, ['INF-01']);
  },
);

t.run();
