// examples/counter: the device module runs under the real CLI (--device ./counter.js), the example client
// script drives it (three writes, three MSIs, the counter read back), and the conformance suite holds the
// device to the spec like any other server.
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { failures, root, runCli, startServer, stopServer, tempDir } from '../conformance/helpers.js';
import { runNode } from '../lib/procs.js';

const example = join(root, 'examples', 'counter');
const server = join(root, 'server', 'bin', 'vfio-user-server.js');

test('the example client drives the example device: three writes, three MSIs', async () => {
  const sock = join(tempDir(), 'counter.sock');
  // As the docs run it: from the example's folder, with a relative module path and an option.
  const srv = await startServer(
    `node ${server} --device ./counter.js,start=10 --socket-path {socket}`,
    sock,
    example,
  );
  try {
    const r = await runNode(['client.js', sock], { cwd: example, timeoutMs: 20_000 });
    assert.is(r.code, 0, r.stderr + r.stdout);
    assert.is(r.stdout, 'device: 9 regions, 5 IRQ types\ncount: 10 -> 16, interrupts: 3\n');
  } finally {
    await stopServer(srv);
  }
});

test('the example device passes the conformance suite', async () => {
  const sock = join(tempDir(), 'vfu.sock');
  const r = await runCli([
    '--socket-path',
    sock,
    '--spawn',
    `node ${server} --socket-path {socket} --device ${join(example, 'counter.js')}`,
    '--scratch',
    '0:8:4',
  ]);
  assert.is(r.report.setupError, null, 'discovery');
  assert.ok(r.report.summary.total >= 200, `${r.report.summary.total} cases`);
  assert.is(r.report.summary.failed, 0, `failing cases:\n${failures(r)}`);
  assert.is(r.code, 0);
  // The register-level cases ran through the scratch register (not skipped for want of one).
  assert.ok(r.report.summary.passed >= 250, `${r.report.summary.passed} passed`);
  for (const c of r.report.cases)
    if (c.status === 'SKIP') assert.ok(c.reason.length > 0, `${c.id}: no reason`);
});

test.run();
