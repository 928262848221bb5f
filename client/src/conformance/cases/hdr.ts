// A. Framing and header (HDR).
import { setTimeout as sleep } from 'node:timers/promises';
import type { Group } from '../case.js';
import { expectErrorShape, expectOk, fail, skip } from '../conn.js';
import {
  Cmd,
  encodeHeader,
  Flag,
  getInfoPayload,
  Irq,
  IrqSet,
  irqInfoPayload,
  message,
  Region,
  regionAccessPayload,
  setIrqsPayload,
} from '../wire.js';
import { startHeldDma } from './sdma-util.js';
import { EINVAL, ENOSYS, IOVA, kase, L, LINVAL, le32, neg, R } from './util.js';

const getInfo = (id: number, flags = 0, error = 0) =>
  message(Cmd.DEVICE_GET_INFO, getInfoPayload(), { id, flags, error });

/** A command header claiming `size` (no body follows unless given). */
function lyingHeader(id: number, cmd: number, size: number): Buffer {
  return encodeHeader({ id, cmd, size, flags: 0, error: 0 });
}

export const hdr: Group = {
  name: 'HDR',
  title: 'Framing and request errors',
  cases: [
    kase('HDR-01', 'A GET_INFO sent one byte per write is processed once', 'S', async (ctx) => {
      const s = await ctx.session();
      const m = getInfo(0x101);
      for (let i = 0; i < m.length; i++) {
        s.conn.send(m.subarray(i, i + 1));
        await sleep(1);
      }
      expectOk(await s.conn.replyTo(0x101, Cmd.DEVICE_GET_INFO), 'GET_INFO byte by byte');
      if (!(await s.conn.quiet(200))) fail('more than one reply');
    }),
    kase('HDR-02', 'Three commands in one write get three replies in order', 'S', async (ctx) => {
      const s = await ctx.session();
      s.conn.send(
        Buffer.concat([
          getInfo(0x201),
          message(Cmd.DEVICE_GET_IRQ_INFO, irqInfoPayload(0), { id: 0x202 }),
          message(Cmd.REGION_READ, regionAccessPayload(Region.CONFIG, 0n, 4), { id: 0x203 }),
        ]),
      );
      expectOk(await s.conn.replyTo(0x201, Cmd.DEVICE_GET_INFO), 'first');
      expectOk(await s.conn.replyTo(0x202, Cmd.DEVICE_GET_IRQ_INFO), 'second');
      expectOk(await s.conn.replyTo(0x203, Cmd.REGION_READ), 'third');
    }),
    kase('HDR-03', 'A header split at byte 4, 8 or 15 with delays', 'S', async (ctx) => {
      const s = await ctx.session();
      for (const cut of [4, 8, 15]) {
        const id = 0x300 + cut;
        const m = getInfo(id);
        s.conn.send(m.subarray(0, cut));
        await sleep(30);
        s.conn.send(m.subarray(cut));
        expectOk(await s.conn.replyTo(id, Cmd.DEVICE_GET_INFO), `split at ${cut}`);
      }
    }),
    kase('HDR-04', 'size = 0: EINVAL or close', 'L, S~', async (ctx) => {
      const s = await ctx.session();
      s.conn.send(lyingHeader(0x401, Cmd.DEVICE_GET_INFO, 0));
      const how = await ctx.errorOrClose(s.conn, 0x401, Cmd.DEVICE_GET_INFO, 'size 0', LINVAL);
      ctx.note(`server ${how === 'close' ? 'closed' : 'replied with an error and kept the connection'}`);
    }),
    kase('HDR-05', 'size = 15: EINVAL or close', 'L', async (ctx) => {
      const s = await ctx.session();
      s.conn.send(lyingHeader(0x501, Cmd.DEVICE_GET_INFO, 15));
      const how = await ctx.errorOrClose(s.conn, 0x501, Cmd.DEVICE_GET_INFO, 'size 15', LINVAL);
      ctx.note(`server ${how === 'close' ? 'closed' : 'replied with an error'}`);
    }),
    kase('HDR-06', 'size = 16 for commands that need a payload (GET_INFO, SET_IRQS)', 'L', async (ctx) => {
      const s = await ctx.session();
      for (const cmd of [Cmd.DEVICE_GET_INFO, Cmd.DEVICE_SET_IRQS]) {
        ctx.errno(await s.call(cmd), `cmd ${cmd} without payload`, LINVAL);
      }
    }),
    kase('HDR-07', 'size above the server maximum: EINVAL, then close', 'L, S~', async (ctx) => {
      const s = await ctx.session();
      const count = ctx.dev.caps.maxDataXferSize + 4096;
      const body = Buffer.concat([regionAccessPayload(0, 0n, count), Buffer.alloc(count)]);
      const id = s.conn.post(Cmd.REGION_WRITE, body);
      const how = await ctx.errorOrClose(
        s.conn,
        id,
        Cmd.REGION_WRITE,
        `${16 + body.length}-byte message`,
        LINVAL,
      );
      ctx.note(`server ${how === 'close' ? 'closed' : 'replied with an error'}`);
    }),
    kase(
      'HDR-08',
      'size = 0xffffffff with no body: EINVAL or close, no hang, no 4 GiB allocation',
      'S~',
      async (ctx) => {
        const s = await ctx.session();
        s.conn.send(lyingHeader(0x801, Cmd.REGION_WRITE, 0xffffffff));
        const how = await ctx.errorOrClose(s.conn, 0x801, Cmd.REGION_WRITE, 'size 0xffffffff', null, 3000);
        ctx.note(`server ${how === 'close' ? 'closed' : 'replied with an error'}`);
      },
    ),
    kase(
      'HDR-09',
      'An unsolicited reply from the client is never treated as a command',
      'L, S~',
      async (ctx) => {
        const s = await ctx.session();
        const fake = Buffer.alloc(16);
        fake.writeUInt32LE(16, 0);
        fake.writeUInt32LE(2, 4);
        s.conn.send(message(Cmd.DEVICE_GET_INFO, fake, { id: 0x7777, flags: Flag.REPLY }));
        const r = await s.conn.nextReply(400);
        if (r === 'closed') {
          ctx.expectClose(s.conn);
          ctx.note('server closed the connection');
          return;
        }
        if (r === 'timeout') {
          ctx.note('ignored');
          return;
        }
        if (!(r.hdr.flags & Flag.ERROR)) fail('the server answered the reply as if it were a command');
        ctx.deviates(
          `the server answered the reply with an error (${r.hdr.error}); recommended: ignore or close`,
          {
            lvu: true,
          },
        );
        ctx.errno(r, 'unsolicited reply', LINVAL);
      },
    ),
    kase('HDR-10', 'Message type 2 or 15: EINVAL or close', 'L', async (ctx) => {
      for (const type of [2, 15]) {
        const s = await ctx.session();
        s.conn.send(getInfo(0xa00 + type, type));
        const how = await ctx.errorOrClose(s.conn, 0xa00 + type, Cmd.DEVICE_GET_INFO, `type ${type}`, LINVAL);
        ctx.note(`type ${type}: ${how}`);
      }
    }),
    kase('HDR-11', 'Reserved flag bits 6-31 set: processed normally', 'S~', async (ctx) => {
      const s = await ctx.session();
      expectOk(
        await s.call(Cmd.DEVICE_GET_INFO, getInfoPayload(), { flags: 0xffffffc0 }),
        'GET_INFO flags 0xffffffc0',
      );
    }),
    kase('HDR-12', 'ERROR bit set in a command: processed normally', 'S~', async (ctx) => {
      const s = await ctx.session();
      expectOk(
        await s.call(Cmd.DEVICE_GET_INFO, getInfoPayload(), { flags: Flag.ERROR }),
        'GET_INFO flags 0x20',
      );
    }),
    kase('HDR-13', 'Non-zero error field in a command: processed', 'S', async (ctx) => {
      const s = await ctx.session();
      expectOk(await s.call(Cmd.DEVICE_GET_INFO, getInfoPayload(), { error: 22 }), 'GET_INFO error 22');
    }),
    neg(
      'HDR-14',
      'command = 0 is refused',
      'L, S~',
      () => ({ cmd: 0, payload: getInfoPayload() }),
      L(EINVAL, ENOSYS),
    ),
    neg(
      'HDR-15',
      'command 14 (removed DIRTY_PAGES) is refused',
      'L',
      () => ({ cmd: 14, payload: Buffer.alloc(16) }),
      L(EINVAL, ENOSYS),
    ),
    kase('HDR-16', 'commands 19, 0x7fff and 0xffff are refused', 'L', async (ctx) => {
      const s = await ctx.session();
      for (const cmd of [19, 0x7fff, 0xffff])
        ctx.errno(await s.call(cmd, Buffer.alloc(16)), `command ${cmd}`, L(EINVAL, ENOSYS));
    }),
    kase('HDR-17', 'Unknown command with NO_REPLY: no reply, connection usable', 'S', async (ctx) => {
      const s = await ctx.session();
      s.conn.post(0x7fff, Buffer.alloc(16), { flags: Flag.NO_REPLY });
      await ctx.noReply(s.conn, 'unknown command with NO_REPLY');
    }),
    kase('HDR-18', 'DMA_READ / DMA_WRITE sent client to server are refused', 'S, L', async (ctx) => {
      const s = await ctx.session();
      const p = Buffer.alloc(16);
      p.writeBigUInt64LE(IOVA, 0);
      p.writeBigUInt64LE(4n, 8);
      ctx.errno(await s.call(Cmd.DMA_READ, p), 'DMA_READ from the client', LINVAL);
      ctx.errno(
        await s.call(Cmd.DMA_WRITE, Buffer.concat([p, Buffer.alloc(4)])),
        'DMA_WRITE from the client',
        LINVAL,
      );
    }),
    kase('HDR-19', 'Reply ids echo 0, 0x7fff and 0xffff', 'S', async (ctx) => {
      const s = await ctx.session();
      for (const id of [0, 0x7fff, 0xffff])
        expectOk(await s.call(Cmd.DEVICE_GET_INFO, getInfoPayload(), { id }), `id ${id}`);
    }),
    kase('HDR-20', 'Two pipelined commands with the same id: two replies, in order', 'S', async (ctx) => {
      const s = await ctx.session();
      s.conn.send(
        Buffer.concat([getInfo(0x2020), message(Cmd.DEVICE_GET_IRQ_INFO, irqInfoPayload(0), { id: 0x2020 })]),
      );
      expectOk(await s.conn.replyTo(0x2020, Cmd.DEVICE_GET_INFO), 'first');
      expectOk(await s.conn.replyTo(0x2020, Cmd.DEVICE_GET_IRQ_INFO), 'second');
    }),
    kase('HDR-21', 'Every reply carries the request command', 'S', async (ctx) => {
      const s = await ctx.session();
      // call() checks the command of each reply, success or error.
      await s.getInfo();
      await s.regionInfoMsg(Region.CONFIG);
      await s.irqInfoMsg(0);
      await s.read(Region.CONFIG, 0n, 4);
      await s.call(Cmd.DEVICE_GET_REGION_INFO, Buffer.alloc(8));
      await s.call(Cmd.DMA_UNMAP, Buffer.alloc(8));
    }),
    kase('HDR-22', 'Every failing command gets a 16-byte reply, flags 0x21, errno > 0', 'S', async (ctx) => {
      const s = await ctx.session();
      const fails: [number, Buffer][] = [
        [Cmd.DEVICE_GET_INFO, getInfoPayload(8)],
        [Cmd.DEVICE_GET_REGION_INFO, Buffer.alloc(8)],
        [Cmd.DEVICE_GET_IRQ_INFO, irqInfoPayload(0xffff)],
        [Cmd.REGION_READ, regionAccessPayload(0xffff, 0n, 4)],
        [Cmd.DMA_MAP, Buffer.alloc(8)],
        [Cmd.DMA_UNMAP, Buffer.alloc(8)],
        [Cmd.DEVICE_SET_IRQS, setIrqsPayload({ flags: IrqSet.DATA_NONE, index: 0, start: 0, count: 0 })],
        [0x7fff, Buffer.alloc(0)],
      ];
      for (const [cmd, p] of fails) expectErrorShape(await s.call(cmd, p), `cmd ${cmd}`);
    }),
    kase('HDR-23', 'Every succeeding command gets flags 0x1, error 0', 'S', async (ctx) => {
      const s = await ctx.session();
      for (const m of [
        await s.getInfo(),
        await s.regionInfoMsg(Region.CONFIG),
        await s.irqInfoMsg(Irq.INTX),
        await s.read(Region.CONFIG, 0n, 4),
      ]) {
        expectOk(m, `cmd ${m.hdr.cmd}`);
      }
    }),
    kase('HDR-24', 'GET_INFO with 2 eventfds attached: fds closed', 'L, S~', async (ctx) => {
      const s = await ctx.session();
      await ctx.fdNeutral('GET_INFO with 2 fds', async () => {
        const m = await s.call(Cmd.DEVICE_GET_INFO, getInfoPayload(), { fds: ctx.eventfds(2) });
        if (m.hdr.flags & Flag.ERROR) {
          ctx.lvuDiffers('GET_INFO with stray fds failed (libvfio-user closes them and answers)');
          ctx.anyError(m, 'GET_INFO with 2 fds');
        }
      });
    }),
    kase('HDR-25', 'An invalid SET_IRQS carrying 2 fds: EINVAL, both closed', 'L', async (ctx) => {
      const s = await ctx.session();
      await ctx.fdNeutral('invalid SET_IRQS with 2 fds', async () => {
        const p = setIrqsPayload({
          flags: IrqSet.DATA_EVENTFD | IrqSet.ACTION_TRIGGER,
          index: ctx.dev.info.numIrqs,
          start: 0,
          count: 2,
        });
        ctx.errno(
          await s.call(Cmd.DEVICE_SET_IRQS, p, { fds: ctx.eventfds(2) }),
          'SET_IRQS bad index',
          LINVAL,
        );
      });
    }),
    kase(
      'HDR-26',
      'More fds than max_msg_fds on an otherwise valid GET_INFO: refused, all fds closed',
      'S~',
      async (ctx) => {
        const n = ctx.dev.caps.maxMsgFds + 1;
        if (n > 253) skip(`max_msg_fds ${n - 1} is at the kernel's SCM_MAX_FD limit`);
        const s = await ctx.session();
        await ctx.fdNeutral(`message with ${n} fds`, async () => {
          const m = await s.call(Cmd.DEVICE_GET_INFO, getInfoPayload(), { fds: ctx.eventfds(n) });
          ctx.errno(m, `GET_INFO with ${n} fds (max_msg_fds ${n - 1})`, R([EINVAL]));
        });
      },
    ),
    kase('HDR-27', '64 posted writes then a read: one reply, the last write seen', 'S', async (ctx) => {
      const m = ctx.needScratch();
      const s = await ctx.session();
      const w = m.widths.includes(4) ? 4 : m.widths[0]!;
      for (let i = 0; i < 64; i++) {
        const d = Buffer.alloc(w);
        d.writeUInt32LE(0x1000 + i, 0);
        s.postWrite(m.region, m.offset, d);
      }
      const got = await s.readOk(m.region, m.offset, w);
      if (got.readUInt32LE(0) !== 0x1000 + 63)
        fail(`read 0x${got.readUInt32LE(0).toString(16)}, expected 0x103f`);
      if (!(await s.conn.quiet(200))) fail('extra reply after the read');
    }),
    kase('HDR-28', '256 pipelined commands: 256 replies in request order', 'S', async (ctx) => {
      const s = await ctx.session();
      const ids: [number, number][] = [];
      const bufs: Buffer[] = [];
      for (let i = 0; i < 256; i++) {
        const id = 0x4000 + i;
        const cmd = i % 2 ? Cmd.DEVICE_GET_IRQ_INFO : Cmd.DEVICE_GET_INFO;
        bufs.push(i % 2 ? message(cmd, irqInfoPayload(0), { id }) : getInfo(id));
        ids.push([id, cmd]);
      }
      s.conn.send(Buffer.concat(bufs));
      for (const [id, cmd] of ids) expectOk(await s.conn.replyTo(id, cmd), `reply ${id}`);
    }),
    kase(
      'HDR-29',
      'A command arriving while the server awaits its own DMA_READ is answered (no deadlock)',
      'S',
      async (ctx) => {
        const drv = ctx.needDriver();
        const s = await ctx.session();
        const held = await startHeldDma(ctx, s, drv, false);
        expectOk(await s.getInfo(), 'GET_INFO while a DMA_READ is outstanding');
        held.release();
        const r = await drv.waitDma(s);
        if (!r.done) fail('the DMA did not complete after the reply');
      },
    ),
    kase('HDR-30', 'The client closes mid-body: handled as a disconnect', 'S~', async (ctx) => {
      await ctx.fdNeutral('disconnect mid-body', async () => {
        const s = await ctx.session();
        const full = message(
          Cmd.REGION_WRITE,
          regionAccessPayload(Region.CONFIG, 0x40n, 64, Buffer.alloc(64)),
        );
        s.conn.send(full.subarray(0, 40));
        await sleep(50);
        s.conn.close();
        await sleep(100);
      });
    }),
    kase(
      'HDR-31',
      'A NO_REPLY command failing validation: no reply; the next is answered',
      'S',
      async (ctx) => {
        const s = await ctx.session();
        s.conn.post(Cmd.DEVICE_GET_INFO, le32(8), { flags: Flag.NO_REPLY });
        s.conn.post(Cmd.DEVICE_GET_INFO, getInfoPayload(8), { flags: Flag.NO_REPLY });
        await ctx.noReply(s.conn, 'invalid GET_INFO with NO_REPLY');
        expectOk(await s.getInfo(), 'next GET_INFO');
      },
    ),
  ],
};
