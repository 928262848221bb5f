// Q. Lifecycle, robustness and backend conventions (LIFE), plus ROB: the suite's own robustness additions.

import { closeSync, existsSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QEMU_VERSION_JSON } from 'vfio-user-protocol';
import type { Group } from '../case.js';
import { expectOk, fail, isError, type Msg, skip } from '../conn.js';
import { negotiate } from '../session.js';
import {
  describeExit,
  removeStaleSocket,
  replaceSocketArg,
  ServerProcess,
  waitListening,
} from '../target.js';
import {
  Cmd,
  dmaMapPayload,
  dmaUnmapPayload,
  Flag,
  getInfoPayload,
  Irq,
  IrqSet,
  message,
  Region,
  regionAccessPayload,
  versionPayload,
} from '../wire.js';
import { startHeldDma } from './sdma-util.js';
import { IOVA, kase, mapMemfd, prng } from './util.js';

/** The package runner a spawn command goes through (npx, npm exec, ...), if any. */
function viaPackageRunner(cmd: string): string | null {
  const m = /^\s*(?:exec\s+)?(npx|npm\s+exec|npm\s+x|pnpm\s+(?:exec|dlx)|yarn\s+(?:exec|dlx))\b/.exec(cmd);
  return m ? m[1]!.replace(/\s+/, ' ') : null;
}

function npxReason(runner: string): string {
  return (
    `--fd not checked: the server is started through ${runner}, which does not pass inherited fds (fd 3) ` +
    "to the program it runs; spawn the program directly (e.g. --spawn 'node …/bin/vfio-user-server.js') to check --fd"
  );
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

export const life: Group = {
  name: 'LIFE',
  title: 'Disconnect, reconnect, process conventions',
  cases: [
    kase(
      'LIFE-01',
      'Disconnect: DMA fds and IRQ eventfds closed, maps dropped, device state kept',
      'S',
      async (ctx) => {
        const m = ctx.dev.scratch;
        await ctx.fdNeutral('fds after disconnect', async () => {
          const s = await ctx.session();
          await mapMemfd(ctx, s, IOVA, ctx.pg);
          await mapMemfd(ctx, s, IOVA + 0x100000n, ctx.pg);
          const v = ctx.dev.vectors;
          if (v)
            await s.setIrqsOk(
              { flags: IrqSet.DATA_EVENTFD | IrqSet.ACTION_TRIGGER, index: v.index, start: 0, count: 1 },
              ctx.eventfds(1),
            );
          if (m) await s.writeOk(m.region, m.offset, Buffer.from([0x21, 0x43, 0x65, 0x87]));
          s.close();
        });
        const t = await ctx.session({}, 'after');
        if (m) {
          const v = await t.readOk(m.region, m.offset, 4);
          if (v.readUInt32LE(0) !== 0x87654321)
            fail(`scratch ${v.toString('hex')} after reconnect (device state lost)`);
        } else ctx.note('device state not checked (no scratch register)');
        await mapMemfd(ctx, t, IOVA, ctx.pg);
      },
    ),
    kase(
      'LIFE-02',
      'Reconnect: VERSION required again, old maps gone',
      'S',
      async (ctx) => {
        const s = await ctx.session();
        await mapMemfd(ctx, s, IOVA, ctx.pg);
        s.close();
        await sleep(50);
        const c = await ctx.raw('no-version');
        const id = c.post(Cmd.DEVICE_GET_INFO, getInfoPayload());
        await ctx.errorOrClose(c, id, Cmd.DEVICE_GET_INFO, 'GET_INFO before VERSION on reconnect', null);
        const t = await ctx.session({}, 'again');
        const u = await t.dmaUnmap({ address: IOVA, size: ctx.pg });
        ctx.note(
          isError(u) ? 'old map gone (unmap: not found)' : 'old map gone or window semantics (unmap OK)',
        );
        await mapMemfd(ctx, t, IOVA, ctx.pg);
      },
      { servesNext: true },
    ),
    kase('LIFE-03', 'A second client while the first is active does not disturb it', 'S~, L', async (ctx) => {
      const a = await ctx.session({}, 'first');
      await mapMemfd(ctx, a, IOVA, ctx.pg);
      const b = await ctx.raw('second', true);
      const id = b.post(Cmd.VERSION, versionPayload(0, 0, QEMU_VERSION_JSON));
      const r = await b.nextReply(500);
      expectOk(await a.getInfo(), 'first client after the second connected');
      const still = await a.dmaMap({ address: IOVA, size: ctx.pg, flags: 3 });
      if (!isError(still)) fail("the first client's map disappeared");
      if (r === 'closed') ctx.note('second client refused (closed)');
      else if (r === 'timeout') {
        ctx.note('second client queued');
        a.close();
        const later = await b.nextReply(ctx.opts.timeoutMs);
        if (later === 'closed') ctx.note('queued client closed after the first left');
        else if (later !== 'timeout' && later.hdr.id === id)
          ctx.note('queued client served after the first left');
      } else ctx.note('second client served concurrently');
      ctx.expectClose(b);
    }),
    kase(
      'LIFE-04',
      'Connect then close immediately: the server keeps serving',
      'S~',
      async (ctx) => {
        for (let i = 0; i < 5; i++) (await ctx.raw(`flash${i}`)).close();
        await sleep(100);
        await (await ctx.session({}, 'after')).probe();
      },
      { servesNext: true },
    ),
    kase(
      'LIFE-05',
      'Disconnect while the server awaits a DMA reply: cleanup, no crash',
      'S~',
      async (ctx) => {
        const d = ctx.needDriver();
        await ctx.fdNeutral('disconnect during DMA', async () => {
          const s = await ctx.session();
          await startHeldDma(ctx, s, d, false);
          s.close();
          await sleep(200);
        });
        const t = await ctx.session({}, 'after');
        await d.waitDma(t, 2000);
      },
    ),
    kase(
      'LIFE-06',
      'SIGTERM: clean exit',
      'S',
      async (ctx) => {
        ctx.needSpawn();
        const p = ctx.target.proc!;
        const pid = ctx.target.serverPid() ?? p.pid;
        process.kill(pid, 'SIGTERM');
        const e = await p.waitExit(5000);
        if (!e) fail('still running 5 s after SIGTERM');
        if (!(e.code === 0 || e.signal === 'SIGTERM' || e.code === 143))
          fail(`after SIGTERM: ${describeExit(e)}`);
        ctx.note(
          `${describeExit(e)}${existsSync(ctx.opts.socketPath) ? ', socket file left behind' : ', socket removed'}`,
        );
      },
      { endsProcess: true },
    ),
    kase(
      'LIFE-07',
      '--socket-path=P and --fd=N work; both together are refused',
      'S',
      async (ctx) => {
        ctx.needSpawn();
        const tpl = ctx.target.spawnTemplate!;
        await ctx.target.stop();
        const dir = join(tmpdir(), `vfu-conf-${process.pid}`);
        const p1 = join(dir, 'eq.sock');
        const { mkdirSync } = await import('node:fs');
        mkdirSync(dir, { recursive: true });
        // --socket-path=P
        let sp = new ServerProcess(replaceSocketArg(tpl, `--socket-path=${p1}`));
        try {
          if (!(await waitListening(p1, 15000, sp)))
            fail(
              `--socket-path=P: not listening (${sp.exit ? describeExit(sp.exit) : 'timeout'}) ${sp.tail(300)}`,
            );
        } finally {
          await sp.stop();
        }
        // --fd=N: a listening socket made here and inherited as fd 3.
        const p2 = join(dir, 'fd.sock');
        rmSync(p2, { force: true });
        const { Listener } = await import('vfio-user-native');
        const lis = Listener.listen(p2);
        sp = new ServerProcess(replaceSocketArg(tpl, '--fd=3'), { extraFds: [lis.fd] });
        try {
          lis.close({ unlink: false });
          await sleep(300);
          const e = sp.exit;
          if (e && viaPackageRunner(tpl)) {
            // npx/npm exec start the program through a shell script and a second node process that do not
            // hand inherited descriptors beyond 0-2 on: the server never sees fd 3. Not the server's fault.
            skip(npxReason(viaPackageRunner(tpl)!));
          }
          if (e) {
            ctx.note(`--fd=3: ${describeExit(e)}`);
            if (/unknown|unrecognized|invalid|unexpected/i.test(sp.tail())) {
              skip(
                `the server does not support --fd (the spec's backend conventions ask for it): ${sp.tail(160)}`,
              );
            }
            fail(`--fd=3: the server ${describeExit(e)} ${sp.tail(200)}`);
          }
          const { Conn } = await import('../conn.js');
          let conn: InstanceType<typeof Conn>;
          try {
            conn = new Conn(ctx.native, (h) => ctx.native.connect(p2, h), 'fd', ctx.opts.timeoutMs);
          } catch (e) {
            fail(`--fd=3: cannot connect to the inherited socket (${(e as Error).message})`);
          }
          ctx.conns.push(conn);
          try {
            const s = await negotiate(conn);
            await s.probe();
            s.close();
          } catch (e) {
            // Through a package runner the socket stays with the runner's own process, which listens on it
            // without ever accepting: the program it starts never got fd 3.
            if (viaPackageRunner(tpl)) {
              ctx.expectClose(conn);
              skip(npxReason(viaPackageRunner(tpl)!));
            }
            throw e;
          }
        } finally {
          await sp.stop();
        }
        // Both together.
        const p3 = join(dir, 'both.sock');
        sp = new ServerProcess(replaceSocketArg(tpl, `--socket-path=${p3} --fd=3`), { extraFds: [0] });
        try {
          // A refusal is immediate, but a loaded 2-core CI machine has taken over 5 s just to start Node: the
          // limit tells a server that refuses from one that runs, not how fast it starts.
          const e = await sp.waitExit(15000);
          if (!e) fail('--socket-path with --fd: still running 15 s later (must be refused)');
          if (e.code === 0) fail('--socket-path with --fd: exited 0 (must fail)');
        } finally {
          await sp.stop();
          rmSync(dir, { recursive: true, force: true });
        }
      },
      { endsProcess: true, timeoutMs: 60000 },
    ),
    kase(
      'LIFE-08',
      'fds 0/1/2 on files: no daemonizing, logs go there',
      'S',
      async (ctx) => {
        ctx.needSpawn();
        await ctx.target.stop();
        const dir = join(tmpdir(), `vfu-conf8-${process.pid}`);
        const { mkdirSync } = await import('node:fs');
        mkdirSync(dir, { recursive: true });
        // The suite's own SIGTERM may have left the previous instance's socket file (a server need not
        // remove it when killed); that is not what this case is about.
        removeStaleSocket(ctx.opts.socketPath);
        const out = join(dir, 'out.log');
        const err = join(dir, 'err.log');
        const o = openSync(out, 'w');
        const e = openSync(err, 'w');
        const sp = new ServerProcess(ctx.target.command(), { stdio: ['ignore', o, e] });
        closeSync(o);
        closeSync(e);
        try {
          if (!(await waitListening(ctx.opts.socketPath, 15000, sp)))
            fail(`not listening ${sp.exit ? describeExit(sp.exit) : ''}`);
          if (sp.exit) fail('the started process exited (daemonized?)');
          const s = await ctx.session({}, 'log');
          await s.probe();
          s.close();
          await sleep(200);
          const bytes = statSync(out).size + statSync(err).size;
          ctx.note(bytes ? `${bytes} bytes of log output` : 'no log output at the default level');
        } finally {
          await sp.stop();
          rmSync(dir, { recursive: true, force: true });
        }
      },
      { endsProcess: true, timeoutMs: 40000 },
    ),
    kase(
      'LIFE-09',
      'A stale socket file is replaced; a live one is not stolen',
      'S~, L',
      async (ctx) => {
        ctx.needSpawn();
        const p = ctx.target.proc!;
        // A live listener: a second instance must not steal the socket.
        const second = new ServerProcess(ctx.target.command());
        // (Generous: a loaded machine may take seconds to start a Node.js server just to have it refuse.)
        const e2 = await second.waitExit(15000);
        await second.stop();
        if (!ctx.target.listening())
          fail('the running server lost its socket to a second instance', { level: 'should' });
        if (!e2) fail('a second instance on a live socket kept running', { level: 'should' });
        if (e2.code === 0) ctx.note('second instance exited 0 (expected a non-zero exit)');
        // Stale: SIGKILL leaves the socket file behind.
        process.kill(ctx.target.serverPid() ?? p.pid, 'SIGKILL');
        await p.waitExit(3000);
        if (!existsSync(ctx.opts.socketPath)) {
          ctx.note('no socket file left behind by SIGKILL (nothing to test)');
          return;
        }
        const third = new ServerProcess(ctx.target.command());
        try {
          if (!(await waitListening(ctx.opts.socketPath, 15000, third))) {
            // libvfio-user documents this refusal; the spec says nothing about stale sockets.
            fail(
              `did not start over a stale socket file (${third.exit ? describeExit(third.exit) : 'timeout'}) ${third.tail(200)}`,
              { level: 'choice', lvu: true },
            );
          }
          const s = await ctx.session({}, 'stale');
          await s.probe();
          s.close();
        } finally {
          await third.stop();
        }
      },
      { endsProcess: true, timeoutMs: 40000 },
    ),
    kase(
      'LIFE-10',
      '1000 map/unmap cycles and 1000 bad requests with fds: no fd or memory growth',
      'S~',
      async (ctx) => {
        const pid = ctx.needPid();
        const s = await ctx.session();
        const fd = ctx.memfd(Number(ctx.pg));
        const base = ctx.fdCount();
        const rss0 = rssKiB(pid);
        for (let i = 0; i < 1000; i++) {
          s.conn.post(Cmd.DMA_MAP, dmaMapPayload({ address: IOVA, size: ctx.pg, flags: 3 }), { fds: [fd] });
          s.conn.post(Cmd.DMA_UNMAP, dmaUnmapPayload({ address: IOVA, size: ctx.pg }));
          s.conn.post(Cmd.DEVICE_SET_IRQS, Buffer.alloc(20), { fds: [fd] });
          if (i % 50 === 49) {
            if (!(await s.conn.until(() => s.conn.pendingReplies() >= 150, 5000))) {
              fail(`only ${s.conn.pendingReplies()} of 150 replies`);
            }
            for (const r of s.conn.drain()) {
              if (r.hdr.cmd === Cmd.DMA_MAP || r.hdr.cmd === Cmd.DMA_UNMAP) expectOk(r, `cycle ${i}`);
            }
          }
        }
        await ctx.fdsBackTo(base, 'after 1000 cycles');
        const grew = rssKiB(pid) - rss0;
        ctx.note(`RSS ${grew >= 0 ? '+' : ''}${grew} KiB`);
        if (grew > 64 * 1024) fail(`RSS grew by ${grew} KiB`);
      },
      { timeoutMs: 120000 },
    ),
    kase(
      'LIFE-11',
      'Random bytes after VERSION, then disconnect: no crash, next client OK',
      'S~',
      async (ctx) => {
        for (const seed of [1, 2, 3]) {
          const s = await ctx.session({}, `rand${seed}`);
          s.conn.send(prng(seed, 65536));
          await sleep(100);
          ctx.expectClose(s.conn);
          s.close();
        }
        await sleep(100);
        await (await ctx.session({}, 'after')).probe();
      },
    ),
    kase(
      'LIFE-12',
      'Many large REGION_WRITEs: bounded memory',
      'S~',
      async (ctx) => {
        const pid = ctx.needPid();
        const cands = ctx.dev.regions
          .map((r, i) => ({ i, r: r.info }))
          .filter((x) => x.i !== Region.CONFIG && x.r.size > 0n && x.r.flags & 2);
        if (!cands.length) skip('no writable BAR');
        cands.sort((a, b) => Number(b.r.size - a.r.size));
        const t = cands[0]!;
        const count = Math.min(ctx.dev.caps.maxDataXferSize, Number(t.r.size));
        const total = Number(process.env.VFU_CONFORMANCE_SOAK ?? 2000);
        const s = await ctx.session();
        const rss0 = rssKiB(pid);
        const data = Buffer.alloc(count);
        const msg = message(Cmd.REGION_WRITE, Buffer.concat([regionAccessPayload(t.i, 0n, count), data]), {
          flags: Flag.NO_REPLY,
        });
        for (let i = 0; i < total; i++) {
          s.conn.send(msg);
          if (i % 16 === 15) expectOk(await s.getInfo(), `sync ${i}`);
        }
        const grew = rssKiB(pid) - rss0;
        ctx.note(
          `${total} writes of ${count} bytes (set VFU_CONFORMANCE_SOAK=10000 for the full count); RSS ${grew >= 0 ? '+' : ''}${grew} KiB`,
        );
        if (grew > 256 * 1024) fail(`RSS grew by ${grew} KiB`);
      },
      { timeoutMs: 300000 },
    ),
  ],
};

// -- ROB: the suite's additions (not in the catalogue) ----------------------------------------------------------

export const rob: Group = {
  name: 'ROB',
  title: 'Robustness (suite additions, basis S~)',
  cases: [
    kase('ROB-01', 'A whole session delivered one byte per write', 'S', async (ctx) => {
      const c = await ctx.raw();
      const msgs = [
        message(Cmd.VERSION, versionPayload(0, 0, QEMU_VERSION_JSON), { id: 1 }),
        message(Cmd.DEVICE_GET_INFO, getInfoPayload(), { id: 2 }),
        message(Cmd.REGION_READ, regionAccessPayload(Region.CONFIG, 0n, 4), { id: 3 }),
      ];
      const all = Buffer.concat(msgs);
      for (let i = 0; i < all.length; i++) {
        c.send(all.subarray(i, i + 1));
        if (i % 8 === 0) await sleep(0);
      }
      expectOk(await c.replyTo(1, Cmd.VERSION), 'VERSION');
      c.negotiated = true;
      expectOk(await c.replyTo(2, Cmd.DEVICE_GET_INFO), 'GET_INFO');
      expectOk(await c.replyTo(3, Cmd.REGION_READ), 'REGION_READ');
    }),
    kase('ROB-02', '1,000 pipelined requests: 1,000 replies in order', 'S', async (ctx) => {
      const s = await ctx.session();
      const bufs: Buffer[] = [];
      const ids: [number, number][] = [];
      for (let i = 0; i < 1000; i++) {
        const id = s.conn.nextId();
        const cmd = [Cmd.DEVICE_GET_INFO, Cmd.DEVICE_GET_IRQ_INFO, Cmd.REGION_READ][i % 3]!;
        const p =
          cmd === Cmd.DEVICE_GET_INFO
            ? getInfoPayload()
            : cmd === Cmd.REGION_READ
              ? regionAccessPayload(Region.CONFIG, 0n, 4)
              : Buffer.from([16, 0, 0, 0, 0, 0, 0, 0, Irq.INTX, 0, 0, 0, 0, 0, 0, 0]);
        bufs.push(message(cmd, p, { id }));
        ids.push([id, cmd]);
      }
      s.conn.send(Buffer.concat(bufs));
      for (const [id, cmd] of ids) expectOk(await s.conn.replyTo(id, cmd), `reply ${id}`);
    }),
    kase('ROB-03', 'The client vanishes mid-header', 'S~', async (ctx) => {
      await ctx.fdNeutral('disconnect mid-header', async () => {
        const s = await ctx.session();
        s.conn.send(message(Cmd.DEVICE_GET_INFO, getInfoPayload()).subarray(0, 7));
        await sleep(30);
        s.close();
        await sleep(100);
      });
    }),
    kase('ROB-04', 'Random bytes before VERSION: no crash', 'S~', async (ctx) => {
      for (const seed of [11, 12]) {
        const c = await ctx.raw(`rand${seed}`);
        c.send(prng(seed, 4096));
        await sleep(100);
        ctx.expectClose(c);
        c.close();
      }
    }),
    kase(
      'ROB-05',
      '1,000 mixed posted writes and reads: only reads answered, each sees the write before it',
      'S',
      async (ctx) => {
        const m = ctx.needScratch();
        const w = m.widths.includes(4) ? 4 : m.widths[0]!;
        const s = await ctx.session();
        const bufs: Buffer[] = [];
        const reads: [number, number][] = [];
        for (let i = 0; i < 500; i++) {
          const d = Buffer.alloc(w);
          d.writeUInt32LE(0x10000 + i);
          bufs.push(
            message(Cmd.REGION_WRITE, regionAccessPayload(m.region, m.offset, w, d), {
              id: s.conn.nextId(),
              flags: Flag.NO_REPLY,
            }),
          );
          const id = s.conn.nextId();
          bufs.push(message(Cmd.REGION_READ, regionAccessPayload(m.region, m.offset, w), { id }));
          reads.push([id, 0x10000 + i]);
        }
        s.conn.send(Buffer.concat(bufs));
        for (const [id, v] of reads) {
          const p = expectOk(await s.conn.replyTo(id, Cmd.REGION_READ), `read ${id}`);
          if (p.readUInt32LE(16) !== v)
            fail(`read ${id} saw 0x${p.readUInt32LE(16).toString(16)}, expected 0x${v.toString(16)}`);
        }
      },
    ),
    kase('ROB-06', '100 connect/VERSION/disconnect cycles: no fd growth', 'S~', async (ctx) => {
      await ctx.fdNeutral('100 sessions', async () => {
        for (let i = 0; i < 100; i++) {
          const s = await ctx.session({}, `c${i}`);
          s.close();
        }
        await sleep(200);
      });
    }),
    kase(
      'ROB-07',
      'A DMA_MAP whose fd comes with the header and whose payload follows in a later write',
      'S~',
      async (ctx) => {
        const s = await ctx.session();
        const fd = ctx.memfd(Number(ctx.pg));
        const msg = message(Cmd.DMA_MAP, dmaMapPayload({ address: IOVA, size: ctx.pg, flags: 3 }), {
          id: 0x707,
        });
        s.conn.send(msg.subarray(0, 16), [fd]);
        await sleep(30);
        s.conn.send(msg.subarray(16));
        expectOk(await s.conn.replyTo(0x707, Cmd.DMA_MAP), 'split DMA_MAP');
        const d = ctx.dev.driver;
        if (!d) return;
        await d.writeBuffer(s, 0, Buffer.from('a11ce5ed', 'hex'));
        await d.dmaToGuest(s, IOVA, 0, 4);
        const b = Buffer.alloc(4);
        readSync(fd, b, 0, 4, 0);
        if (b.toString('hex') !== 'a11ce5ed') fail('the split map does not reach the memfd');
      },
    ),
    kase('ROB-08', 'EVENTFD|TRIGGER count 1 with 2 fds: refused, both closed', 'S~', async (ctx) => {
      const v = ctx.needVectors(1);
      const s = await ctx.session();
      await ctx.fdNeutral('SET_IRQS with an extra fd', async () => {
        const m = await s.setIrqs(
          { flags: IrqSet.DATA_EVENTFD | IrqSet.ACTION_TRIGGER, index: v.index, start: 0, count: 1 },
          ctx.eventfds(2),
        );
        if (!isError(m)) fail('count 1 with 2 fds accepted');
        ctx.anyError(m, 'count 1 with 2 fds');
      });
    }),
    kase('ROB-09', 'A device DMA spanning two adjacent maps (fd-backed, then fd-less)', 'S~', async (ctx) => {
      const d = ctx.needDriver();
      const s = await ctx.session();
      const pg = ctx.pg;
      const fd = await mapMemfd(ctx, s, IOVA, pg);
      await s.dmaMapOk({ address: IOVA + pg, size: pg, flags: 3 });
      const mem = Buffer.alloc(Number(pg));
      s.conn.dmaRegions.push({ address: IOVA + pg, data: mem, prot: 3 });
      const pattern = prng(17, 256);
      await d.writeBuffer(s, 0, pattern);
      await d.dmaToGuest(s, IOVA + pg - 128n, 0, 256);
      const a = Buffer.alloc(128);
      readSync(fd, a, 0, 128, Number(pg) - 128);
      if (!a.equals(pattern.subarray(0, 128)) || !mem.subarray(0, 128).equals(pattern.subarray(128))) {
        fail('a DMA across the boundary of two adjacent maps did not land in both');
      }
    }),
    kase(
      'ROB-10',
      'Two messages in one write, the first carrying the fd: the fd belongs to the first',
      'S',
      async (ctx) => {
        const d = ctx.needDriver();
        const s = await ctx.session();
        const fd = ctx.memfd(Number(ctx.pg));
        const map = message(Cmd.DMA_MAP, dmaMapPayload({ address: IOVA, size: ctx.pg, flags: 3 }), {
          id: 0xa01,
        });
        const info = message(Cmd.DEVICE_GET_INFO, getInfoPayload(), { id: 0xa02 });
        s.conn.send(Buffer.concat([map, info]), [fd]);
        expectOk(await s.conn.replyTo(0xa01, Cmd.DMA_MAP), 'DMA_MAP');
        expectOk(await s.conn.replyTo(0xa02, Cmd.DEVICE_GET_INFO), 'GET_INFO');
        await d.writeBuffer(s, 0, Buffer.from('f00dfeed', 'hex'));
        await d.dmaToGuest(s, IOVA, 0, 4);
        const b = Buffer.alloc(4);
        readSync(fd, b, 0, 4, 0);
        if (b.toString('hex') !== 'f00dfeed') {
          fail(
            `the DMA did not reach the memfd (${b.toString('hex')}): the fd was not attributed to the DMA_MAP it came with`,
          );
        }
        if (s.conn.serverRequests.length)
          fail('the map was treated as fd-less (the server sent DMA messages)');
      },
    ),
    kase(
      'ROB-11',
      'argsz 0xffffffff on GET_INFO / GET_REGION_INFO / GET_IRQ_INFO: a normal-sized reply',
      'S~',
      async (ctx) => {
        const s = await ctx.session();
        const checks: [string, Msg, number][] = [
          ['GET_INFO', await s.getInfo(0xffffffff), 16],
          [
            'GET_REGION_INFO 7',
            await s.regionInfoMsg(Region.CONFIG, 0xffffffff),
            ctx.dev.regions[Region.CONFIG]!.neededArgsz,
          ],
          ['GET_IRQ_INFO 0', await s.irqInfoMsg(0, 0xffffffff), 16],
        ];
        for (const [what, m, size] of checks) {
          for (const fd of m.fds) ctx.native.closeFd(fd);
          if (isError(m)) {
            ctx.anyError(m, what);
            continue;
          }
          if (m.payload.length !== size)
            fail(`${what}: ${m.payload.length}-byte payload for argsz 0xffffffff (expected ${size})`);
        }
      },
    ),
    kase('ROB-12', 'VERSION with 64 KiB of JSON whitespace: answered, no crash', 'S~', async (ctx) => {
      const c = await ctx.raw();
      const json = `{"capabilities": {"max_msg_fds": 8}${' '.repeat(65536)}}`;
      const m = await c.call(Cmd.VERSION, versionPayload(0, 0, json));
      if (isError(m)) {
        ctx.anyError(m, 'big VERSION');
        ctx.expectClose(c);
      } else c.negotiated = true;
    }),
    kase(
      'ROB-13',
      'VERSION with hostile JSON (deep nesting, invalid UTF-8, null caps, 1e300): answered, no crash',
      'S~',
      async (ctx) => {
        const bodies: [string, Buffer][] = [
          ['100,000 nested arrays', Buffer.from(`{"x": ${'['.repeat(100000)}${']'.repeat(100000)}}`)],
          [
            'invalid UTF-8',
            Buffer.concat([
              Buffer.from('{"capabilities": {"x\u0000'),
              Buffer.from([0xff, 0xfe]),
              Buffer.from('": 1}}'),
            ]),
          ],
          ['capabilities null', Buffer.from('{"capabilities": null}')],
          ['max_msg_fds 1e300', Buffer.from('{"capabilities": {"max_msg_fds": 1e300}}')],
          ['max_data_xfer_size 0', Buffer.from('{"capabilities": {"max_data_xfer_size": 0}}')],
        ];
        for (const [what, body] of bodies) {
          const c = await ctx.raw(what);
          const m = await c.call(Cmd.VERSION, Buffer.concat([Buffer.alloc(4), body, Buffer.from([0])]));
          ctx.expectClose(c);
          // Only an out-of-range number must be refused; the rest is valid enough to accept.
          if (!isError(m)) {
            if (what.startsWith('max_msg_fds')) fail(`${what}: accepted`);
            ctx.note(`${what}: accepted`);
          } else ctx.anyError(m, what);
        }
      },
    ),
    kase('ROB-14', "QEMU's realize and reset sequence", 'Q', async (ctx) => {
      const s = await ctx.session();
      const info = await s.info();
      for (const i of [0, 1, 2, 3, 4, 5, 7]) if (i < info.numRegions) await s.regionInfo(i);
      const err = info.numIrqs > Irq.ERR ? await s.irqInfo(Irq.ERR) : null;
      const cfgSize = Number(ctx.dev.configSize >= 4096n ? 4096n : ctx.dev.configSize);
      await s.readOk(Region.CONFIG, 0n, cfgSize);
      const rom = await s.readOk(Region.CONFIG, 0x30n, 4);
      await s.writeOk(Region.CONFIG, 0x30n, Buffer.from([0x00, 0xf8, 0xff, 0xff]));
      await s.readOk(Region.CONFIG, 0x30n, 4);
      await s.writeOk(Region.CONFIG, 0x30n, rom);
      for (const b of ctx.dev.memBars) await s.readOk(Region.CONFIG, BigInt(0x10 + 4 * b.index), 4);
      const pin = (await s.readOk(Region.CONFIG, 0x3dn, 1))[0]!;
      await s.readOk(Region.CONFIG, 0x3dn, 1);
      const efd = IrqSet.DATA_EVENTFD | IrqSet.ACTION_TRIGGER;
      if (pin) await s.setIrqsOk({ flags: efd, index: Irq.INTX, start: 0, count: 1 }, ctx.eventfds(1));
      if (err?.count === 1)
        await s.setIrqsOk({ flags: efd, index: Irq.ERR, start: 0, count: 1 }, ctx.eventfds(1));
      // Machine reset.
      if (pin)
        await s.setIrqsOk({
          flags: IrqSet.DATA_NONE | IrqSet.ACTION_TRIGGER,
          index: Irq.INTX,
          start: 0,
          count: 0,
        });
      await s.readOk(Region.CONFIG, 4n, 2);
      await s.writeOk(Region.CONFIG, 4n, Buffer.alloc(2));
      if (ctx.dev.reset) expectOk(await s.reset(), 'DEVICE_RESET');
      await s.readOk(Region.CONFIG, 0x3dn, 1);
      if (pin) await s.setIrqsOk({ flags: efd, index: Irq.INTX, start: 0, count: 1 }, ctx.eventfds(1));
      for (let off = 0x10n; off <= 0x24n; off += 4n) await s.writeOk(Region.CONFIG, off, Buffer.alloc(4));
    }),
    kase(
      'ROB-15',
      '1,000 requests and an immediate close: the server survives replying into a closed socket',
      'S~',
      async (ctx) => {
        await ctx.fdNeutral('flood then close', async () => {
          const s = await ctx.session();
          const one = message(Cmd.REGION_READ, regionAccessPayload(Region.CONFIG, 0n, 256));
          s.conn.send(Buffer.concat(Array.from({ length: 1000 }, () => one)));
          s.close();
          await sleep(300);
        });
      },
    ),
  ],
};
