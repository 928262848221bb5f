// Operations tooling against a real server and a real client over real sockets: the Prometheus endpoint is
// scraped while the client drives the edu device and every counter is checked to move as the client's actions
// say; every control-socket command is driven over node:net; `trace start` logs decoded lines; the wire recorder
// captures the session byte for byte.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { GuestMemory, VfioUserClient } from 'vfio-user-client';
import { closeFd, eventfd, eventfdRead, memfdCreate } from 'vfio-user-native';
import { decodeHeader, TraceFlags, TraceKind, TraceParser, type TraceRecord } from 'vfio-user-protocol';
import {
  ControlServer,
  createEdu,
  ServerMetrics,
  serveMetrics,
  Tracing,
  VfioUserServer,
  WireRecorder,
} from 'vfio-user-server';
import { Edu } from '../lib/edu-regs.js';
import { sleep, until } from '../lib/wait.js';
import { u32 } from './helpers.js';

const BAR0 = 0;
const CONFIG = 7;
const INTX = 0;
/** SET_IRQS DATA_EVENTFD | ACTION_TRIGGER. */
const TRIGGER_EVENTFD = 0x24;

function get(port: number, path: string): Promise<{ status: number; type?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The value of one series (`name{labels}` must match the labels given, in any order), or undefined. */
function series(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^([^{ ]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1]!, x[2]!]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

interface Rig {
  dir: string;
  path: string;
  server: VfioUserServer;
  device: ReturnType<typeof createEdu>;
  close(): Promise<void>;
}

async function rig(): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'vu-ops-'));
  const path = join(dir, 'vfio-user.sock');
  const device = createEdu();
  const server = new VfioUserServer({ socketPath: path, device, deviceName: 'edu' });
  await server.start();
  return {
    dir,
    path,
    server,
    device,
    async close() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------------------------------------------------

const M = suite('ops: Prometheus metrics');

M(
  'a scrape while a client drives the server: every counter moves as the client acted; labels device+socket',
  async () => {
    const r = await rig();
    const metrics = new ServerMetrics({
      server: r.server,
      device: r.device,
      deviceName: 'edu',
      socket: r.path,
    });
    await metrics.start();
    const http = await serveMetrics(metrics, '127.0.0.1', 0, pino({ level: 'silent' }));
    const port = http.address.port;
    const L = { device: 'edu', socket: r.path };
    try {
      const before = await get(port, '/metrics');
      assert.is(before.status, 200);
      assert.match(before.type ?? '', /text\/plain/);
      assert.is(series(before.body, 'vfio_user_client_connected', L), 0);
      assert.is(series(before.body, 'vfio_user_dma_maps_live', L), 0);
      assert.is(series(before.body, 'vfio_user_messages_total', { ...L, command: 'DMA_MAP' }), undefined);
      // Event loop lag (prom-client's default metrics) carries the same labels.
      assert.ok(series(before.body, 'nodejs_eventloop_lag_seconds', L) !== undefined);

      const c = await VfioUserClient.connect(r.path);
      await c.negotiate();
      const mem1 = memfdCreate('g1', 0x40000n);
      const mem2 = memfdCreate('g2', 0x10000n);
      await c.dmaMap({ address: 0x100000n, size: 0x40000n, fd: mem1 });
      await c.dmaMap({ address: 0x200000n, size: 0x10000n, fd: mem2 });
      closeFd(mem1);
      closeFd(mem2);
      // Two failures of one kind (REGION_READ past BAR0's end), one of another (DMA_MAP overlapping).
      for (let i = 0; i < 2; i++) await c.regionRead(BAR0, 0x200000n, 4).catch(() => {});
      await c.dmaMap({ address: 0x100000n, size: 0x1000n }).catch(() => {});
      // Device activity: a factorial, an interrupt on an INTx eventfd.
      const efd = eventfd();
      await c.setIrqs({ index: INTX, start: 0, count: 1, flags: TRIGGER_EVENTFD, fds: [efd] });
      await c.regionWrite(BAR0, BigInt(Edu.FACTORIAL), u32(5));
      await c.regionWrite(BAR0, BigInt(Edu.IRQ_RAISE), u32(1));
      await until(() => eventfdRead(efd) > 0n, 2000, 'the INTx eventfd');
      await c.regionRead(CONFIG, 0n, 4);

      const mid = (await get(port, '/metrics')).body;
      assert.is(series(mid, 'vfio_user_client_connected', L), 1);
      assert.is(series(mid, 'vfio_user_connections_total', L), 1);
      assert.is(series(mid, 'vfio_user_messages_total', { ...L, command: 'VERSION' }), 1);
      assert.is(series(mid, 'vfio_user_messages_total', { ...L, command: 'DMA_MAP' }), 3);
      assert.is(series(mid, 'vfio_user_messages_total', { ...L, command: 'REGION_READ' }), 3);
      assert.is(series(mid, 'vfio_user_messages_total', { ...L, command: 'REGION_WRITE' }), 2);
      assert.is(series(mid, 'vfio_user_errors_total', { ...L, command: 'REGION_READ', errno: 'EINVAL' }), 2);
      assert.is(series(mid, 'vfio_user_errors_total', { ...L, command: 'DMA_MAP', errno: 'EEXIST' }), 1);
      assert.is(series(mid, 'vfio_user_dma_maps_live', L), 2);
      assert.is(series(mid, 'vfio_user_dma_maps_total', L), 2);
      assert.is(series(mid, 'vfio_user_dma_map_failures_total', { ...L, errno: 'EEXIST' }), 1);
      assert.is(series(mid, 'vfio_user_dma_mapped_bytes', L), 0x50000);
      assert.is(series(mid, 'vfio_user_dma_files', L), 2);
      assert.is(series(mid, 'vfio_user_request_duration_seconds_count', { ...L, command: 'DMA_MAP' }), 3);
      assert.is(
        series(mid, 'vfio_user_request_duration_seconds_bucket', { ...L, command: 'DMA_MAP', le: '+Inf' }),
        3,
      );
      assert.ok(
        (series(mid, 'vfio_user_request_duration_seconds_sum', { ...L, command: 'DMA_MAP' }) ?? 0) > 0,
      );
      assert.is(series(mid, 'vfio_user_irq_signals_total', L), 1);
      assert.is(series(mid, 'vfio_user_device_stat', { ...L, stat: 'factorials' }), 1);
      assert.is(series(mid, 'vfio_user_device_stat', { ...L, stat: 'interruptsRaised' }), 1);
      assert.is(series(mid, 'vfio_user_migration_state', { ...L, state: 'RUNNING' }), 1);
      assert.is(series(mid, 'vfio_user_migration_state', { ...L, state: 'STOP' }), 0);
      assert.is(series(mid, 'vfio_user_iommu_info', { ...L, backend: 'none' }), 1);
      // The none backend accepts every map (nothing to program): the mirror still counts them.
      assert.is(series(mid, 'vfio_user_iommu_maps_total', L), 2);

      await c.dmaUnmap({ address: 0x200000n, size: 0x10000n });
      c.close();
      closeFd(efd);
      await until(() => !r.server.clients.active, 2000, 'the session to end');
      const after = (await get(port, '/metrics')).body;
      assert.is(series(after, 'vfio_user_client_connected', L), 0);
      assert.is(series(after, 'vfio_user_disconnections_total', L), 1);
      assert.is(series(after, 'vfio_user_dma_maps_live', L), 0);
      assert.is(series(after, 'vfio_user_dma_mapped_bytes', L), 0);
      assert.is(series(after, 'vfio_user_dma_unmaps_total', L), 2);
      assert.is(series(after, 'vfio_user_messages_total', { ...L, command: 'DMA_UNMAP' }), 1);

      assert.is((await get(port, '/nope')).status, 404);
      const health = await get(port, '/healthz');
      assert.is(health.status, 200);
      assert.equal(JSON.parse(health.body), { status: 'ok', client: false, waiting: 0 });
    } finally {
      await http.close();
      await metrics.close();
      await r.close();
    }
  },
);

M('a protocol violation is counted by errno and ends the session', async () => {
  const r = await rig();
  const metrics = new ServerMetrics({
    server: r.server,
    device: r.device,
    deviceName: 'edu',
    socket: r.path,
  });
  await metrics.start();
  try {
    const s = connect(r.path);
    await new Promise<void>((res) => s.once('connect', () => res()));
    // A well-framed message of reserved type 3: a header the stream cannot be trusted after.
    const bad = Buffer.alloc(16);
    bad.writeUInt16LE(1, 2);
    bad.writeUInt32LE(16, 4);
    bad.writeUInt32LE(3, 8);
    s.write(bad);
    await until(() => r.server.stats.errors.EINVAL === 1, 2000, 'the violation');
    s.destroy();
    const text = await metrics.metrics();
    assert.is(series(text, 'vfio_user_protocol_violations_total', { errno: 'EINVAL' }), 1);
  } finally {
    await metrics.close();
    await r.close();
  }
});

M(
  'failed requests: one info line per kind (command + errno) with the count, not one per request',
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vu-ops-'));
    const path = join(dir, 'vfio-user.sock');
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l)) });
    const server = new VfioUserServer({ socketPath: path, device: createEdu(), deviceName: 'edu', logger });
    await server.start();
    try {
      const c = await VfioUserClient.connect(path);
      await c.negotiate();
      for (let i = 0; i < 50; i++) await c.regionRead(BAR0, 0x200000n, 4).catch(() => {});
      await c.dmaMap({ address: 0x123n, size: 0x1000n }).catch(() => {}); // unaligned: another kind
      const failed = lines.filter((l) => l.msg === 'request failed');
      assert.is(failed.length, 2);
      assert.equal(
        failed.map((l) => [l.command, l.errno]),
        [
          ['REGION_READ', 'EINVAL'],
          ['DMA_MAP', 'EINVAL'],
        ],
      );
      c.close();
      await until(() => !server.clients.active, 2000, 'the session to end');
      // The session's end flushes the count of what was held back.
      const repeated = lines.filter((l) => l.msg === 'request failed (repeated)');
      assert.equal(
        repeated.map((l) => [l.command, l.repeated]),
        [['REGION_READ', 49]],
      );
      assert.ok(lines.filter((l) => l.level === 30).length < 20, 'a handful of info lines for 51 failures');
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

M.run();

// ------------------------------------------------------------------------------------------------------------

const C = suite('ops: control socket');

// biome-ignore lint/suspicious/noExplicitAny: answers are free-form JSON the assertions walk into
type Answer = { ok: boolean; result?: any; error?: string };

/** Sends lines on one connection and collects one answer per line. */
async function ask(path: string, ...lines: string[]): Promise<Answer[]> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let buf = '';
    const answers: { ok: boolean; result?: unknown; error?: string }[] = [];
    s.setEncoding('utf8');
    s.on('connect', () => s.write(lines.map((l) => `${l}\n`).join('')));
    s.on('data', (d: string) => {
      buf += d;
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        answers.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
      }
      if (answers.length === lines.length) {
        s.end();
        resolve(answers as never);
      }
    });
    s.on('error', reject);
  });
}

C(
  'every command over a real socket (0600): help, stats, dma, irqs, session, log-level, trace, migration',
  async () => {
    const r = await rig();
    const logged: Record<string, unknown>[] = [];
    const log = pino(
      { level: 'info' },
      {
        write(line: string) {
          logged.push(JSON.parse(line));
        },
      },
    );
    const tracing = new Tracing(r.server, log);
    const ctl = new ControlServer({ server: r.server, device: r.device, deviceName: 'edu', log, tracing });
    const cpath = join(r.dir, 'control.sock');
    await ctl.listen(cpath);
    try {
      assert.is(statSync(cpath).mode & 0o777, 0o600);
      const [help] = await ask(cpath, 'help');
      const names = (help!.result as { name: string }[]).map((c) => c.name).sort();
      assert.equal(names, ['dma', 'help', 'irqs', 'log-level', 'migration', 'session', 'stats', 'trace']);

      // No client yet.
      const [sess0, dma0] = await ask(cpath, 'session', '{"command":"dma"}');
      assert.is(sess0!.result.client, null);
      assert.is(sess0!.result.device, 'edu');
      assert.equal(dma0!.result, { count: 0, regions: [] });

      // trace start (log mode) before the client, so its messages are logged decoded.
      const [tr] = await ask(cpath, 'trace start');
      assert.equal(tr!.result, { log: true });

      const c = await VfioUserClient.connect(r.path);
      await c.negotiate();
      const fd = memfdCreate('g', 0x20000n);
      await c.dmaMap({ address: 0x100000n, size: 0x20000n, fd, flags: 1 });
      closeFd(fd);
      const mem = GuestMemory.create(0x1000);
      await c.mapMemory(mem, { address: 0x300000n });
      const efd = eventfd();
      await c.setIrqs({ index: 1, start: 0, count: 1, flags: TRIGGER_EVENTFD, fds: [efd] });
      await c.regionRead(BAR0, 0x200000n, 4).catch(() => {});

      const [stats, dma, irqs, sess, mig] = await ask(cpath, 'stats', 'dma', 'irqs', 'session', 'migration');
      assert.ok(stats!.ok);
      assert.is(stats!.result.stats.messages.DMA_MAP, 2);
      assert.is(stats!.result.stats.errors.EINVAL, 1);
      assert.is(stats!.result.dma.live, 2);
      assert.is(typeof stats!.result.device.factorials, 'number');
      assert.is(dma!.result.count, 2);
      assert.equal(dma!.result.regions[0], {
        iova: '0x100000',
        size: '0x20000',
        prot: 'r-',
        access: dma!.result.regions[0].access,
        fileOffset: '0x0',
        file: dma!.result.regions[0].file,
      });
      assert.is(dma!.result.regions[1].iova, '0x300000');
      assert.is(dma!.result.regions[1].prot, 'rw');
      assert.equal(irqs!.result.vectors, [
        { index: 1, vector: 0, eventfd: true, masked: false, pending: false },
      ]);
      assert.is(sess!.result.client.session, 1);
      assert.is(sess!.result.client.peer.pid, process.pid);
      assert.is(sess!.result.capabilities.maxDmaMaps, 65535);
      assert.equal(mig!.result, { state: 'RUNNING', bytesRead: 0, bytesWritten: 0, transitions: 0 });

      // The decoded trace lines of that traffic are in the log at info.
      const wire = logged.filter((l) => l.msg === 'trace').map((l) => String(l.wire));
      assert.ok(
        wire.some((w) =>
          /^[\d.]+ C>S #\d+ DMA_MAP argsz=32 flags=READ offset=0x0 address=0x100000 size=0x20000 fds=1$/.test(
            w,
          ),
        ),
        wire.join('\n'),
      );
      assert.ok(wire.some((w) => /S>C #\d+ REGION_READ error EINVAL\(22\) [\d.]+ms$/.test(w)));

      // log-level: shown, changed (children follow), refused when unknown.
      const [lv0, lv1, lvBad, lv2] = await ask(
        cpath,
        'log-level',
        'log-level debug',
        'log-level loud',
        'log-level',
      );
      assert.equal(lv0!.result, { level: 'info' });
      assert.equal(lv1!.result, { previous: 'info', level: 'debug' });
      assert.is(lvBad!.ok, false);
      assert.match(lvBad!.error!, /unknown level 'loud'/);
      assert.equal(lv2!.result, { level: 'debug' });
      assert.ok(log.child({ x: 1 }).isLevelEnabled('debug'));

      // trace stop, then trace start FILE records; stop closes the file.
      const rec = join(r.dir, 'ctl.trace');
      const [st, st2, st3] = await ask(cpath, 'trace stop', `trace start ${rec}`, 'trace');
      assert.equal(st!.result, { log: false });
      assert.is(st2!.result.record, rec);
      assert.is(st3!.result.record, rec);
      await c.getDeviceInfo();
      const [st4] = await ask(cpath, 'trace stop');
      assert.equal(st4!.result, { log: false });
      const parser = new TraceParser();
      const recs = parser.push(readFileSync(rec));
      parser.end();
      // Joined mid-session: a SESSION_START marker, then the GET_INFO request and reply.
      assert.equal(
        recs.map((x) => x.kind),
        [TraceKind.SESSION_START, TraceKind.MESSAGE, TraceKind.MESSAGE],
      );
      assert.is(decodeHeader(recs[1]!.body).command, 4);

      // Errors: unknown command, bad JSON, bad args, a relative trace path, a line too long (connection closed).
      const errs = await ask(
        cpath,
        'frobnicate',
        '{"command":',
        '{"command":"stats","args":[1]}',
        'trace start rel.trace',
        'trace sideways',
      );
      assert.equal(
        errs.map((e) => e.ok),
        [false, false, false, false, false],
      );
      assert.match(errs[0]!.error!, /unknown command 'frobnicate'/);
      assert.match(errs[1]!.error!, /not valid JSON/);
      const [long] = await ask(cpath, 'x'.repeat(70 * 1024));
      assert.match(long!.error!, /longer than/);

      // A command registered by another feature joins the table (and help).
      ctl.register('ping', { usage: 'ping', help: 'answers pong', run: () => 'pong' });
      const [pong, help2] = await ask(cpath, 'ping', 'help');
      assert.is(pong!.result, 'pong');
      assert.ok((help2!.result as { name: string }[]).some((x) => x.name === 'ping'));

      c.close();
      closeFd(efd);
      mem.close();
    } finally {
      await tracing.stop();
      await ctl.close();
      await r.close();
    }
    assert.not.ok(existsSync(cpath), 'the control socket file is removed');
  },
);

C.run();

// ------------------------------------------------------------------------------------------------------------

const R = suite('ops: wire recorder');

R('records both directions byte for byte with fd counts, session markers, and monotonic times', async () => {
  const r = await rig();
  const file = join(r.dir, 'wire.trace');
  const rec = await WireRecorder.open(file, r.server, pino({ level: 'silent' }));
  try {
    const c = await VfioUserClient.connect(r.path);
    await c.negotiate();
    const fd = memfdCreate('g', 0x10000n);
    await c.dmaMap({ address: 0x100000n, size: 0x10000n, fd });
    closeFd(fd);
    await c.regionRead(CONFIG, 0n, 4);
    await c.reset();
    c.close();
    await until(() => !r.server.clients.active, 2000, 'the session to end');
    await sleep(10);
  } finally {
    await rec.close();
    await r.server.close();
  }
  const p = new TraceParser();
  const recs: TraceRecord[] = p.push(readFileSync(file));
  p.end();
  const mode = statSync(file).mode & 0o777;
  rmSync(r.dir, { recursive: true, force: true });
  assert.is(recs[0]!.kind, TraceKind.SESSION_START);
  assert.is(recs.at(-1)!.kind, TraceKind.SESSION_END);
  const msgs = recs.filter((x) => x.kind === TraceKind.MESSAGE);
  const seq = msgs.map((m) => {
    const h = decodeHeader(m.body);
    return `${m.flags & TraceFlags.FROM_SERVER ? 'S' : 'C'}:${h.command}:${h.size === m.body.length}:${m.fds}`;
  });
  // VERSION, DMA_MAP (1 fd), REGION_READ, DEVICE_RESET: each request then its reply.
  assert.equal(seq, [
    'C:1:true:0',
    'S:1:true:0',
    'C:2:true:1',
    'S:2:true:0',
    'C:9:true:0',
    'S:9:true:0',
    'C:13:true:0',
    'S:13:true:0',
  ]);
  for (let i = 1; i < recs.length; i++) assert.ok(recs[i]!.timeNs >= recs[i - 1]!.timeNs);
  assert.is(mode, 0o600);
});

R.run();
