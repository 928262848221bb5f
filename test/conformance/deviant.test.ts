// Self-test of the conformance suite's verdicts: the deviant reference server (deviant-server.ts) differs from
// our server only in ways the spec allows (it exits after a failed negotiation, answers the alternative errnos,
// accepts more than 65,535 maps, keeps config space across a reset). The suite must grade it PASS, WARN or
// SKIP, never FAIL, and this test holds the exact verdict of every case: the WARNs are the documented legal
// choices, the SKIPs what edu does not offer, everything else PASS.
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { failures, root, runCli, tempDir } from './helpers.js';

/** Legal choices graded WARN (profile spec): the server exits after a client that did not negotiate, and
 * (like our server) refuses a dirty-page report for part of a map. */
const WARN = ['VER-31', 'VER-32', 'FEA-23', 'LIFE-02', 'LIFE-04'];
/** Not offered by edu (no sparse mmap, no write_multiple, ...) or not applicable: skipped with a reason. */
const SKIP = (
  'RGN-07 RGN-08 RGN-09 RGN-10 RGN-14 RGN-17 IOF-09 IOF-10 IRQS-03 IRQS-28 IRQS-29 IRQS-30 RW-16 RW-17 CFG-08 ' +
  'CFG-16 CFG-18 MAP-31 MAP-32 MAP-33 RST-03 WMU-02 WMU-03 WMU-04 WMU-05 WMU-06 WMU-07 FEA-03 FEA-19 FEA-28 MIG-02'
).split(' ');

test('the deviant reference server: no FAIL, and the exact verdict of every case', async () => {
  const sock = join(tempDir(), 'deviant.sock');
  const server = join(root, 'test', 'dist', 'conformance', 'deviant-server.js');
  // The relay doubles every copy and the machine is shared: a generous reply timeout and a short soak keep the
  // timing-bound cases (LIFE-12) about the server's behaviour, not the machine's load.
  const r = await runCli(
    [
      '--socket-path',
      sock,
      '--spawn',
      `node ${server} --socket-path {socket}`,
      '--report',
      '--timeout',
      '15000',
    ],
    { VFU_CONFORMANCE_SOAK: '64' },
  );
  assert.is(r.report.setupError, null, 'discovery');
  assert.is(r.report.summary.failed, 0, `failing cases:\n${failures(r)}`);
  assert.is(r.code, 0, 'a run with WARNs only exits 0');
  const wrong: string[] = [];
  for (const c of r.report.cases) {
    const want = WARN.includes(c.id) ? 'WARN' : SKIP.includes(c.id) ? 'SKIP' : 'PASS';
    if (c.status !== want) wrong.push(`${c.id}: ${c.status}, expected ${want} (${c.reason})`);
  }
  assert.is(wrong.length, 0, wrong.join('\n'));
  // Each deviation was seen as what it is.
  const by = r.byId;
  assert.match(
    by.get('VER-01')!.notes.join(' '),
    /exited with code 1/,
    'exit after a failed VERSION is reported',
  );
  assert.ok(!by.get('VER-01')!.reason.includes('crash'), 'an exit is not a crash');
  assert.match(by.get('VER-31')!.reason, /exited with code 1/);
  assert.match(by.get('MAP-21')!.notes.join(' '), /accepted/, 'more than 65,535 maps');
  assert.match(by.get('RST-05')!.notes.join(' '), /restored across the reset/, 'config kept over reset');
  assert.is(by.get('HDR-14')!.status, 'PASS', 'ENOSYS for an unknown command is legal');
  assert.is(by.get('FEA-02')!.status, 'PASS', 'ENOTSUP for an unknown feature is legal');
  // The report a person reads: per group, with the WARNs under "works with QEMU".
  assert.match(r.stdout, /\nVER \(\d+ pass, 2 warn, 0 fail, 0 skip\)\n {2}deviates from the spec/);
  assert.match(r.stdout, /optional or not offered \(not checked\):\n {4}WMU-02, WMU-03/);
});

test.run();
