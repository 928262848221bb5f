// P. Server -> client DMA (SDMA): the suite maps memory without fds and serves the server's DMA_READ/DMA_WRITE.

import { setTimeout as sleep } from 'node:timers/promises';
import { Errno } from 'vfio-user-protocol';
import type { Group } from '../case.js';
import { Conn, closeFds, expectOk, fail, type Msg, type ServerRequest, skip } from '../conn.js';
import { parseVersionReply, Session, sendVersion } from '../session.js';
import { Cmd, Flag, message } from '../wire.js';
import { mapMessageDma, startHeldDma } from './sdma-util.js';
import { IOVA, kase, prng } from './util.js';
import { TWIN_JSON } from './ver.js';

const hdrOf = (r: ServerRequest, extra = Buffer.alloc(0)) => {
  const h = Buffer.alloc(16);
  h.writeBigUInt64LE(r.address, 0);
  h.writeBigUInt64LE(r.count, 8);
  return Buffer.concat([h, extra]);
};

export const sdma: Group = {
  name: 'SDMA',
  title: 'Server -> client DMA_READ / DMA_WRITE',
  cases: [
    kase(
      'SDMA-01',
      'Device DMA over an fd-less map: requests only inside the map, data correct',
      'S',
      async (ctx) => {
        const d = ctx.needDriver();
        const s = await ctx.session();
        const mem = await mapMessageDma(s, IOVA, Number(ctx.pg));
        prng(7, 256).copy(mem);
        await d.dmaFromGuest(s, IOVA, 0, 256);
        const got = await d.readBuffer(s, 0, 256);
        if (!got.equals(mem.subarray(0, 256)))
          fail('the device read different bytes than guest memory holds');
        await d.writeBuffer(s, 0, prng(9, 128));
        await d.dmaToGuest(s, IOVA + 512n, 0, 128);
        if (!mem.subarray(512, 640).equals(prng(9, 128))) fail('DMA_WRITE data did not land');
        if (!s.conn.serverRequests.length) fail('no DMA_READ/DMA_WRITE was sent');
        // Unaligned, across a page boundary inside a two-page map.
        const pg = Number(ctx.pg);
        const two = await mapMessageDma(s, IOVA + 0x100000n, 2 * pg);
        prng(13, 200).copy(two, pg - 100);
        await d.dmaFromGuest(s, IOVA + 0x100000n + BigInt(pg - 100), 0, 200);
        await d.dmaToGuest(s, IOVA + 0x100000n + BigInt(pg - 37), 0, 200);
        if (!two.subarray(pg - 37, pg + 163).equals(prng(13, 200)))
          fail('a page-crossing DMA did not round-trip');
        const outside = s.conn.serverRequests.filter(
          (r) =>
            !(r.address >= IOVA && r.address + r.count <= IOVA + ctx.pg) &&
            !(r.address >= IOVA + 0x100000n && r.address + r.count <= IOVA + 0x100000n + 2n * ctx.pg),
        );
        if (outside.length) fail(`${outside.length} request(s) outside the maps`);
      },
    ),
    kase(
      'SDMA-02',
      'Client max_data_xfer_size 1024: server DMA split into counts <= 1024',
      'S',
      async (ctx) => {
        const d = ctx.needDriver();
        const s = await ctx.session({
          json: '{"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1024}}',
        });
        const n = Math.min(4096, d.maxDma);
        const mem = await mapMessageDma(s, IOVA, Math.max(n, Number(ctx.pg)));
        prng(3, n).copy(mem);
        await d.dmaFromGuest(s, IOVA, 0, n);
        await d.dmaToGuest(s, IOVA + BigInt(n / 2), 0, n / 2);
        const reqs = s.conn.serverRequests;
        const big = reqs.filter((r) => r.count > 1024n);
        if (big.length) fail(`${big.length} request(s) with count > 1024 (max ${big[0]!.count})`);
        const total = reqs.filter((r) => r.cmd === Cmd.DMA_READ).reduce((a, r) => a + r.count, 0n);
        if (total !== BigInt(n)) fail(`DMA_READ counts add up to ${total}, expected ${n}`);
        ctx.note(`${reqs.length} requests`);
      },
    ),
    kase('SDMA-03', 'Server DMA messages carry no fds', 'Q', async (ctx) => {
      const d = ctx.needDriver();
      const s = await ctx.session();
      await mapMessageDma(s, IOVA, Number(ctx.pg));
      await d.dmaFromGuest(s, IOVA, 0, 64);
      await d.dmaToGuest(s, IOVA, 0, 64);
      const withFds = s.conn.serverRequests.filter((r) => r.nfds > 0);
      if (withFds.length) fail(`${withFds.length} request(s) carried fds`);
    }),
    kase('SDMA-04', 'Layout: address @0, count @8, data @16; type command', 'S', async (ctx) => {
      const d = ctx.needDriver();
      const s = await ctx.session();
      await mapMessageDma(s, IOVA, Number(ctx.pg));
      await d.dmaFromGuest(s, IOVA + 8n, 0, 32);
      await d.dmaToGuest(s, IOVA + 64n, 0, 32);
      for (const r of s.conn.serverRequests) {
        if (r.flags & 0xf) fail(`request flags 0x${r.flags.toString(16)} (not a command)`);
        const want = r.cmd === Cmd.DMA_WRITE ? 32 + Number(r.count) : 32;
        if (r.size !== want)
          fail(
            `${r.cmd === Cmd.DMA_WRITE ? 'DMA_WRITE' : 'DMA_READ'} of ${r.count} is ${r.size} bytes, expected ${want}`,
          );
      }
      if (!s.conn.serverRequests.some((r) => r.cmd === Cmd.DMA_READ && r.address >= IOVA + 8n))
        fail('no DMA_READ at the address');
    }),
    kase('SDMA-05', 'The client answers EFAULT: handled, the connection stays up', 'S~', async (ctx) => {
      const d = ctx.needDriver();
      const s = await ctx.session();
      await mapMessageDma(s, IOVA, Number(ctx.pg));
      s.conn.onServerRequest = (r) =>
        message(r.cmd, undefined, { id: r.id, flags: Flag.REPLY | Flag.ERROR, error: Errno.EFAULT });
      await d.dmaFromGuest(s, IOVA, 0, 64);
      s.conn.onServerRequest = null;
      if (!s.conn.serverRequests.length) fail('no DMA request was sent');
    }),
    kase(
      'SDMA-06',
      'A client command before answering DMA_READ is answered; the DMA completes later',
      'S',
      async (ctx) => {
        const d = ctx.needDriver();
        const s = await ctx.session();
        const h = await startHeldDma(ctx, s, d, false);
        expectOk(await s.read(7, 0n, 4), 'REGION_READ while a DMA_READ is outstanding');
        h.release();
        if (!(await d.waitDma(s)).done) fail('the DMA never completed');
      },
    ),
    kase('SDMA-07', 'A DMA_READ never answered: other commands are still served', 'S~', async (ctx) => {
      const d = ctx.needDriver();
      const s = await ctx.session();
      await startHeldDma(ctx, s, d, false);
      for (let i = 0; i < 5; i++) expectOk(await s.getInfo(), `GET_INFO ${i}`);
    }),
    kase(
      'SDMA-08',
      'A reply with the wrong id: ignored or the connection closed, no crash',
      'L',
      async (ctx) => {
        const d = ctx.needDriver();
        const s = await ctx.session();
        const h = await startHeldDma(ctx, s, d, false);
        s.conn.send(
          message(h.req.cmd, hdrOf(h.req, Buffer.alloc(Number(h.req.count))), {
            id: (h.req.id + 1) & 0xffff,
            flags: Flag.REPLY,
          }),
        );
        await sleep(100);
        if (s.conn.closed) {
          ctx.expectClose(s.conn);
          ctx.note('closed the connection');
          return;
        }
        s.conn.drain();
        h.release();
        await d.waitDma(s, 2000);
        ctx.note('ignored the stray reply');
        ctx.expectClose(s.conn);
      },
    ),
    kase(
      'SDMA-09',
      'A DMA_WRITE reply with a 12-byte payload (spec table) is accepted',
      'S~',
      async (ctx) => {
        const d = ctx.needDriver();
        const s = await ctx.session();
        const mem = await mapMessageDma(s, IOVA, Number(ctx.pg));
        s.conn.onServerRequest = (r, m, c) => {
          if (r.cmd !== Cmd.DMA_WRITE) return undefined;
          c.serveDma(r, m);
          return message(r.cmd, hdrOf(r).subarray(0, 12), { id: r.id, flags: Flag.REPLY });
        };
        await d.writeBuffer(s, 0, prng(5, 64));
        const out = await d.dmaToGuest(s, IOVA, 0, 64);
        if (!out.done) fail('the DMA did not complete');
        if (!mem.subarray(0, 64).equals(prng(5, 64))) fail('data did not land');
      },
    ),
    kase('SDMA-10', 'With twin-socket, server DMA uses only the second socket', 'S', async (ctx) => {
      const d = ctx.needDriver();
      const c = await ctx.raw();
      const m = await sendVersion(c, { json: TWIN_JSON });
      const v = parseVersionReply(m);
      c.negotiated = true;
      const t = v.caps.twinSocket;
      if (!t?.supported) {
        closeFds(ctx.native, m.fds);
        skip('the server does not offer twin-socket');
      }
      const idx = t.fd_index ?? -1;
      const fd = m.fds[idx];
      for (const [i, f] of m.fds.entries()) if (i !== idx) ctx.native.closeFd(f);
      if (fd === undefined) fail(`twin_socket fd_index ${idx} but ${m.fds.length} fd(s)`);
      const twin = new Conn(
        ctx.native,
        (h) => ctx.native.wrap(fd, h),
        `${ctx.caseDef.id}/twin`,
        ctx.opts.timeoutMs,
      );
      ctx.conns.push(twin);
      twin.tainted = true;
      const s = new Session(c, v);
      await s.dmaMapOk({ address: IOVA, size: ctx.pg, flags: 3 });
      const mem = Buffer.alloc(Number(ctx.pg));
      prng(21, 128).copy(mem);
      twin.dmaRegions.push({ address: IOVA, data: mem, prot: 3 });
      c.dmaRegions.push({ address: IOVA, data: mem, prot: 3 });
      await d.dmaFromGuest(s, IOVA, 0, 128);
      await d.dmaToGuest(s, IOVA + 1024n, 0, 128);
      if (c.serverRequests.length) fail(`${c.serverRequests.length} DMA request(s) on the main socket`);
      if (!twin.serverRequests.length) fail('no DMA request on the twin socket');
      if (!mem.subarray(1024, 1152).equals(mem.subarray(0, 128)))
        fail('data did not round-trip through the twin socket');
      ctx.note(`${twin.serverRequests.length} request(s) on the twin socket`);
    }),
    kase('SDMA-11', 'A READ-only map: the server never sends DMA_WRITE into it', 'S~', async (ctx) => {
      const d = ctx.needDriver();
      const s = await ctx.session();
      await mapMessageDma(s, IOVA, Number(ctx.pg), 1);
      await d.writeBuffer(s, 0, prng(1, 64));
      await d.dmaToGuest(s, IOVA, 0, 64);
      const w = s.conn.serverRequests.filter((r) => r.cmd === Cmd.DMA_WRITE);
      if (w.length) fail(`${w.length} DMA_WRITE(s) into a read-only map`);
      s.conn.violations.length = 0;
    }),
    kase('SDMA-12', 'After the unmap, no server DMA to the range', 'S', async (ctx) => {
      const d = ctx.needDriver();
      const s = await ctx.session();
      await mapMessageDma(s, IOVA, Number(ctx.pg));
      await s.dmaUnmapOk({ address: IOVA, size: ctx.pg });
      s.conn.dmaRegions.length = 0;
      const before = s.conn.serverRequests.length;
      await d.dmaFromGuest(s, IOVA, 0, 64);
      await d.dmaToGuest(s, IOVA, 0, 64);
      const n = s.conn.serverRequests.length - before;
      if (n) fail(`${n} DMA request(s) for an unmapped range`);
      s.conn.violations.length = 0;
    }),
  ],
};

export type { Msg };
