// The whole conformance suite against our own server (every device we ship), spawned by the suite itself:
// any failing case fails this test.
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cli, failures, runCli, serverCommand, tempDir } from './helpers.js';

const DEVICES = ['edu'];

for (const device of DEVICES) {
  test(`conformance: our server with --device ${device} passes every applicable case`, async () => {
    const sock = join(tempDir(), 'vfu.sock');
    const r = await runCli(['--socket-path', sock, '--spawn', serverCommand(device)]);
    assert.is(r.report.setupError, null, 'discovery');
    assert.ok(r.report.summary.total >= 200, `${r.report.summary.total} cases`);
    assert.is(r.report.summary.failed, 0, `failing cases:\n${failures(r)}`);
    assert.is(r.code, 0, 'exit code');
    // The summary line, exactly.
    const { passed, warned, failed, skipped } = r.report.summary;
    assert.ok(
      r.stdout
        .split('\n')
        .includes(`${passed} passed, ${warned} warned, ${failed} failed, ${skipped} skipped`),
      'summary line',
    );
    // Every case names its rule in the report.
    for (const c of r.report.cases) assert.ok(c.rule.length > 20 && c.level, `${c.id} names its rule`);
    // Every skip says why; every line has the documented shape.
    for (const c of r.report.cases)
      if (c.status === 'SKIP') assert.ok(c.reason.length > 0, `${c.id} skipped without a reason`);
    const lines = r.stdout.split('\n').filter((l) => /^(PASS|WARN|FAIL|SKIP) {2}/.test(l));
    assert.is(lines.length, r.report.summary.total, 'one line per case');
    // The *dev* cases ran: edu is driven (DMA, interrupts).
    for (const id of ['SDMA-01', 'SDMA-02', 'HDR-29', 'MAP-26', 'UNM-17', 'IRQS-01']) {
      assert.is(r.byId.get(id)?.status, 'PASS', `${id} should run against edu`);
    }
  });
}

test('LIFE-07 through npx: says that npx cannot pass fd 3, instead of failing the server', async () => {
  const sock = join(tempDir(), 'npx.sock');
  const r = await runCli([
    '--socket-path',
    sock,
    '--spawn',
    'npx vfio-user-server --socket-path {socket}',
    '--only',
    'LIFE-07',
  ]);
  const c = r.byId.get('LIFE-07');
  assert.is(c?.status, 'SKIP', `${c?.status}: ${c?.reason}`);
  assert.match(c!.reason, /through npx, which does not pass inherited fds \(fd 3\)/);
});

test('the CLI: --list, usage errors, an unreachable socket', async () => {
  const { spawnSync } = await import('node:child_process');
  const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  const list = run(['--list']);
  assert.is(list.status, 0);
  const m = /^(\d+) cases in (\d+) groups$/m.exec(list.stdout);
  assert.ok(m && Number(m[1]) >= 200, list.stdout.slice(-200));
  assert.match(list.stdout, /^MAP-10 {4}.*\[S, L: spec rule\]$/m);
  assert.match(list.stdout, /^INF-02 {4}.*libvfio-user's choice, not a spec rule\]$/m);
  assert.is(run([]).status, 2, 'no socket');
  assert.is(run(['--socket-path', '/nonexistent/x.sock']).status, 2, 'missing socket');
  assert.is(run(['--socket-path', '/tmp/x', '--profile', 'strict']).status, 2, 'bad profile');
});

test.run();
