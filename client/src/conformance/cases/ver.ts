// B. VERSION and negotiation (VER).

import { setTimeout as sleep } from 'node:timers/promises';
import { errnoName, QEMU_LIMITS, QEMU_VERSION_JSON } from 'vfio-user-protocol';
import type { Ctx, Group } from '../case.js';
import { type Conn, closeFds, expectOk, fail, type Msg } from '../conn.js';
import { parseVersionReply, sendVersion } from '../session.js';
import { Cmd, getInfoPayload, message, RegionFlag, versionPayload } from '../wire.js';
import { mapMessageDma } from './sdma-util.js';
import { IOVA, kase, LINVAL } from './util.js';

/** Asks for twin-socket; padded so that a server keeping its reply within the request size has room. */
export const TWIN_JSON = `{"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576, "twin_socket": {"supported": true}}, "x_pad": "${'.'.repeat(120)}"}`;

/** VERSION with `json` must fail (EINVAL, libvfio-user's choice; the spec profile records other errnos). */
function badJson(id: string, title: string, basis: string, json: string, nul = true) {
  return kase(id, title, basis, async (ctx) => {
    const c = await ctx.raw();
    const m = await c.call(Cmd.VERSION, versionPayload(0, 0, json, nul));
    ctx.errno(m, title, LINVAL);
    ctx.expectClose(c);
  });
}

/** VERSION with `json` must succeed. */
function goodJson(
  id: string,
  title: string,
  basis: string,
  json: string | null,
  check?: (ctx: Ctx, m: Msg, c: Conn) => Promise<void>,
) {
  return kase(id, title, basis, async (ctx) => {
    const c = await ctx.raw();
    const m = await sendVersion(c, { json });
    const v = parseVersionReply(m);
    closeFds(ctx.native, m.fds);
    c.negotiated = true;
    if (v.major !== 0) fail(`reply major ${v.major}`);
    if (check) await check(ctx, m, c);
  });
}

/** Either an error reply or a close (no success). */
async function rejectOrClose(ctx: Ctx, c: Conn, id: number, what: string): Promise<'error' | 'close'> {
  return ctx.errorOrClose(c, id, Cmd.VERSION, what, LINVAL);
}

export const ver: Group = {
  name: 'VER',
  title: 'VERSION and negotiation',
  cases: [
    kase('VER-01', 'GET_INFO before VERSION is refused', 'S, L', async (ctx) => {
      const c = await ctx.raw();
      const id = c.post(Cmd.DEVICE_GET_INFO, getInfoPayload());
      const how = await ctx.errorOrClose(c, id, Cmd.DEVICE_GET_INFO, 'GET_INFO as first message', LINVAL);
      ctx.note(`server ${how === 'close' ? 'closed the connection' : 'replied with an error'}`);
    }),
    kase('VER-02', 'VERSION with a 0- or 2-byte payload', 'L', async (ctx) => {
      for (const p of [Buffer.alloc(0), Buffer.from([0, 0])]) {
        const c = await ctx.raw();
        const id = c.post(Cmd.VERSION, p);
        await rejectOrClose(ctx, c, id, `VERSION with ${p.length}-byte payload`);
      }
    }),
    kase('VER-03', 'VERSION carrying an fd is refused and the fd closed', 'L', async (ctx) => {
      await ctx.fdNeutral('VERSION with an fd', async () => {
        const c = await ctx.raw();
        const id = c.post(Cmd.VERSION, versionPayload(0, 0, QEMU_VERSION_JSON), { fds: [ctx.eventfd()] });
        await rejectOrClose(ctx, c, id, 'VERSION with an fd');
        c.close();
      });
    }),
    kase('VER-04', 'Unsupported major (1, 999): close (spec) or EINVAL (LVU)', 'S, L', async (ctx) => {
      for (const major of [1, 999]) {
        const c = await ctx.raw();
        const id = c.post(Cmd.VERSION, versionPayload(major, 0, QEMU_VERSION_JSON));
        const how = await ctx.errorOrClose(
          c,
          id,
          Cmd.VERSION,
          `VERSION ${major}.0`,
          LINVAL,
          ctx.opts.timeoutMs,
        );
        if (how === 'error') {
          const closed = await c.waitClosed(500);
          if (!closed) {
            ctx.deviates(
              `VERSION ${major}.0: error reply but the connection stays open (spec: the server "closes the connection if it cannot support the advertised version")`,
              { lvu: true },
            );
          }
        }
      }
    }),
    kase('VER-05', 'VERSION 0.99 succeeds with minor <= 99', 'S', async (ctx) => {
      const c = await ctx.raw();
      const v = parseVersionReply(await sendVersion(c, { minor: 99 }));
      c.negotiated = true;
      if (v.major !== 0 || v.minor > 99) fail(`reply ${v.major}.${v.minor} to 0.99`);
      ctx.note(`server minor ${v.minor}`);
    }),
    goodJson('VER-06', 'VERSION 0.0 (QEMU) gets reply 0.0', 'S, Q', QEMU_VERSION_JSON, async (_ctx, m) => {
      const p = expectOk(m, 'VERSION');
      if (p.readUInt16LE(0) !== 0 || p.readUInt16LE(2) !== 0) {
        fail(`reply ${p.readUInt16LE(0)}.${p.readUInt16LE(2)}, QEMU needs 0.0`);
      }
    }),
    goodJson('VER-07', 'VERSION with no JSON (4 bytes) succeeds', 'S', null),
    goodJson('VER-08', 'VERSION with {} succeeds', 'S, L', '{}'),
    badJson('VER-09', 'JSON without its terminating NUL', 'S, L', '{}', false),
    badJson('VER-10', 'JSON "{" is refused', 'L', '{'),
    badJson('VER-11', 'JSON unterminated string is refused', 'L', '"'),
    badJson('VER-12', 'capabilities is a string', 'L', '{"capabilities": "23"}'),
    badJson('VER-13', 'max_msg_fds is a string', 'L', '{"capabilities": {"max_msg_fds": "foo"}}'),
    badJson('VER-14', 'max_msg_fds = -1', 'L', '{"capabilities": {"max_msg_fds": -1}}'),
    kase('VER-15', 'max_msg_fds = 1025 (LVU limit 1024)', 'L', async (ctx) => {
      const c = await ctx.raw();
      const m = await c.call(Cmd.VERSION, versionPayload(0, 0, '{"capabilities": {"max_msg_fds": 1025}}'));
      if (m.hdr.flags & 0x20) {
        ctx.errno(m, 'max_msg_fds 1025', LINVAL);
        ctx.expectClose(c);
      } else {
        c.negotiated = true;
        ctx.lvuDiffers("max_msg_fds 1025 accepted (the 1024 limit is libvfio-user's choice, not a rule)");
      }
    }),
    kase('VER-16', 'max_msg_fds = 0: accepted, and the server then sends no fds', 'L, S~', async (ctx) => {
      const c = await ctx.raw();
      const m = await sendVersion(c, { json: '{"capabilities": {"max_msg_fds": 0}}' });
      const v = parseVersionReply(m);
      c.negotiated = true;
      if (m.fds.length) fail(`VERSION reply carried ${m.fds.length} fd(s)`);
      if (v.caps.twinSocket?.supported) fail('twin-socket enabled with max_msg_fds 0');
      for (let i = 0; i < ctx.dev.regions.length; i++) {
        const r = ctx.dev.regions[i]!;
        if (!(r.info.flags & RegionFlag.MMAP)) continue;
        const q = await c.call(Cmd.DEVICE_GET_REGION_INFO, regionInfo(i, r.neededArgsz));
        closeFds(ctx.native, q.fds);
        if (q.fds.length)
          fail(`GET_REGION_INFO ${i} sent ${q.fds.length} fd(s) to a client with max_msg_fds 0`);
      }
    }),
    badJson('VER-17', 'max_data_xfer_size is a string', 'L', '{"capabilities": {"max_data_xfer_size": "x"}}'),
    kase(
      'VER-18',
      'max_data_xfer_size = 4096: accepted, and server DMA chunks stay <= 4096',
      'S',
      async (ctx) => {
        const s = await ctx.session({
          json: '{"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 4096}}',
        });
        const d = ctx.dev.driver;
        if (!d) {
          ctx.note('DMA chunking not checked (no device driver; see SDMA-02)');
          return;
        }
        const n = d.maxDma;
        await mapMessageDma(s, IOVA, Math.max(n, Number(ctx.pg)));
        await d.dmaFromGuest(s, IOVA, 0, n);
        const big = s.conn.serverRequests.filter((r) => r.count > 4096n);
        if (big.length) fail(`server DMA of ${big[0]!.count} bytes to a client that accepts 4096`);
        if (!s.conn.serverRequests.length) fail('no server DMA was seen');
      },
    ),
    badJson('VER-19', 'migration is a string', 'L', '{"capabilities": {"migration": "23"}}'),
    badJson(
      'VER-20',
      'migration.pgsize is a string',
      'L',
      '{"capabilities": {"migration": {"pgsize": "foo"}}}',
    ),
    kase('VER-21', 'migration.pgsize = 4095 is refused (server with migration)', 'L', async (ctx) => {
      ctx.needMigration();
      const c = await ctx.raw();
      const m = await c.call(
        Cmd.VERSION,
        versionPayload(0, 0, '{"capabilities": {"migration": {"pgsize": 4095}}}'),
      );
      ctx.errno(m, 'migration pgsize 4095', LINVAL);
      ctx.expectClose(c);
    }),
    kase('VER-22', 'twin_socket malformed (5, {"supported":"yes"})', 'L', async (ctx) => {
      for (const j of [
        '{"capabilities": {"twin_socket": 5}}',
        '{"capabilities": {"twin_socket": {"supported": "yes"}}}',
      ]) {
        const c = await ctx.raw();
        const m = await c.call(Cmd.VERSION, versionPayload(0, 0, j));
        ctx.errno(m, `VERSION ${j}`, LINVAL);
        ctx.expectClose(c);
      }
    }),
    kase(
      'VER-23',
      'twin_socket requested: absent/false, or true with fd_index and that fd',
      'S',
      async (ctx) => {
        const c = await ctx.raw();
        const m = await sendVersion(c, { json: TWIN_JSON });
        const v = parseVersionReply(m);
        c.negotiated = true;
        // Keep the twin end open for the rest of the case: a server may end the session when it closes.
        for (const fd of m.fds) ctx.own(fd);
        const t = v.caps.twinSocket;
        if (t?.supported !== true) {
          if (m.fds.length) fail(`twin-socket not enabled, but the reply carried ${m.fds.length} fd(s)`);
          ctx.note('twin-socket not offered');
          return;
        }
        if (typeof t.fd_index !== 'number' || t.fd_index < 0 || t.fd_index >= m.fds.length) {
          fail(`twin_socket supported with fd_index ${t.fd_index} but ${m.fds.length} fd(s) attached`);
        }
        ctx.note('twin-socket enabled');
      },
    ),
    kase('VER-24', 'twin_socket with max_msg_fds 0 is not enabled', 'L, S~', async (ctx) => {
      const c = await ctx.raw();
      const m = await c.call(
        Cmd.VERSION,
        versionPayload(0, 0, '{"capabilities": {"max_msg_fds": 0, "twin_socket": {"supported": true}}}'),
      );
      closeFds(ctx.native, m.fds);
      if (m.hdr.flags & 0x20) {
        ctx.note(`refused with ${errnoName(m.hdr.error)}`);
        ctx.expectClose(c);
        return;
      }
      const v = parseVersionReply(m);
      c.negotiated = true;
      if (v.caps.twinSocket?.supported === true || m.fds.length)
        fail('twin-socket enabled although max_msg_fds is 0');
    }),
    goodJson(
      'VER-25',
      'An unknown capability key is ignored',
      'S~, L',
      '{"capabilities": {"max_msg_fds": 8, "x_vendor": 1}, "x_top": 2}',
    ),
    kase('VER-26', 'Top-level JSON that is not an object', 'S~, L', async (ctx) => {
      const c = await ctx.raw();
      const m = await c.call(Cmd.VERSION, versionPayload(0, 0, '[]'));
      if (m.hdr.flags & 0x20) {
        ctx.errno(m, 'VERSION []', LINVAL);
        ctx.expectClose(c);
        return;
      }
      c.negotiated = true;
      ctx.deviates('JSON [] accepted as "no capabilities" (recommended: EINVAL)', { lvu: true });
    }),
    kase(
      'VER-27',
      'A successful reply: major/minor, NUL-terminated JSON, caps a subset of the offer',
      'S',
      async (ctx) => {
        const c = await ctx.raw();
        const m = await sendVersion(c, {
          json: '{"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576}}',
        });
        const v = parseVersionReply(m);
        c.negotiated = true;
        if (v.major !== 0 || v.minor !== 0) fail(`reply ${v.major}.${v.minor} to 0.0`);
        if (v.jsonError) fail(v.jsonError);
        if (v.json !== null && (typeof v.json !== 'object' || Array.isArray(v.json)))
          fail('JSON is not an object');
        if (v.caps.raw.twin_socket !== undefined)
          fail('reply has twin_socket although the client did not offer it');
        if (v.caps.raw.write_multiple !== undefined && v.caps.raw.write_multiple !== false) {
          fail('reply offers write_multiple although the client did not');
        }
        if (v.rawJson === null) ctx.note('reply carries no JSON (QEMU then mis-parses; always send one)');
      },
    ),
    kase('VER-28', "QEMU's 214-byte request gets a reply of at most 214 bytes", 'Q', async (ctx) => {
      const c = await ctx.raw();
      const req = versionPayload(0, 0, QEMU_VERSION_JSON);
      const m = await sendVersion(c);
      parseVersionReply(m);
      c.negotiated = true;
      const limit = 16 + req.length;
      if (m.hdr.size > limit) fail(`reply is ${m.hdr.size} bytes; QEMU's buffer is ${limit}`);
      ctx.note(`reply ${m.hdr.size} bytes (request ${limit})`);
    }),
    kase('VER-29', 'Reply caps within QEMU limits', 'Q', async (ctx) => {
      const c = await ctx.raw();
      const v = parseVersionReply(await sendVersion(c));
      c.negotiated = true;
      const raw = v.caps.raw;
      const bad: string[] = [];
      if (typeof raw.max_msg_fds !== 'number') bad.push('max_msg_fds absent (QEMU then assumes 8)');
      else if (raw.max_msg_fds > 16 || raw.max_msg_fds < 1)
        bad.push(`max_msg_fds ${raw.max_msg_fds} not in 1..16`);
      if (typeof raw.max_data_xfer_size !== 'number') bad.push('max_data_xfer_size absent');
      else if (raw.max_data_xfer_size > 64 << 20 || raw.max_data_xfer_size < 1) {
        bad.push(`max_data_xfer_size ${raw.max_data_xfer_size} not in 1..64 MiB`);
      }
      if (
        raw.pgsizes !== undefined &&
        (typeof raw.pgsizes !== 'number' || raw.pgsizes % 4096 !== 0 || raw.pgsizes === 0)
      ) {
        bad.push(`pgsizes ${raw.pgsizes} not a multiple of 4096`);
      }
      if (
        raw.max_dma_maps !== undefined &&
        (typeof raw.max_dma_maps !== 'number' || raw.max_dma_maps > QEMU_LIMITS.maxDmaMaps)
      ) {
        bad.push(`max_dma_maps ${raw.max_dma_maps} > ${QEMU_LIMITS.maxDmaMaps}`);
      }
      if (bad.length) fail(bad.join('; '));
    }),
    kase('VER-30', 'A second VERSION after negotiation is refused', 'S~, L', async (ctx) => {
      const s = await ctx.session();
      const m = await s.call(Cmd.VERSION, versionPayload(0, 0, QEMU_VERSION_JSON));
      closeFds(ctx.native, m.fds);
      if (!(m.hdr.flags & 0x20)) fail('second VERSION succeeded');
      ctx.errno(m, 'second VERSION', LINVAL);
    }),
    kase(
      'VER-31',
      'Connect and close without sending: the server keeps listening',
      'S~',
      async (ctx) => {
        const c = await ctx.raw();
        c.close();
        await sleep(CLOSE_SETTLE_MS);
        const s = await ctx.session({}, 'next');
        await s.probe();
      },
      { servesNext: true },
    ),
    kase(
      'VER-32',
      'Half a VERSION then close: the server keeps listening',
      'S~',
      async (ctx) => {
        const c = await ctx.raw();
        c.send(message(Cmd.VERSION, versionPayload(0, 0, QEMU_VERSION_JSON)).subarray(0, 20));
        await sleep(50);
        c.close();
        await sleep(CLOSE_SETTLE_MS);
        const s = await ctx.session({}, 'next');
        await s.probe();
      },
      { servesNext: true },
    ),
    kase('VER-33', 'No JSON proposed: reply caps (informational)', 'S, L', async (ctx) => {
      const c = await ctx.raw();
      const v = parseVersionReply(await sendVersion(c, { json: null }));
      c.negotiated = true;
      if (v.rawJson !== null)
        ctx.note(`reply carries JSON although none was proposed: ${v.rawJson} (allowed)`);
    }),
  ],
};

/**
 * How long VER-31/32 wait after closing before the next session: a server allowed to exit after a client that did
 * not negotiate must have seen the close by then, or the next session races its exit and the choice goes unseen
 * (100 ms was too short on a loaded 2-core machine: the deviant reference server's exit came after the next
 * session had finished).
 */
const CLOSE_SETTLE_MS = 500;

function regionInfo(index: number, argsz: number): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(argsz, 0);
  b.writeUInt32LE(index, 8);
  return b;
}
