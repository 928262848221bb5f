// The session fuzz target's rig: one in-process vfio-user-server (edu) on a temp socket; each execution is a new
// client connection (the addon's Connection over a real UNIX socket) that negotiates, sends the fuzz messages and
// leaves. Checked per execution: no "handler failed unexpectedly" (a handler threw something without an errno),
// the session ends, and the process holds as many fds as before.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Connection, closeFd, openFds } from 'vfio-user-native';
import { Command, encodeMessage, encodeVersionRequest } from 'vfio-user-protocol';
import { createDevice, VfioUserServer } from 'vfio-user-server';
import { sleep, until } from '../lib/wait.js';

export interface SessionRig {
  exchange(msgs: Uint8Array[]): Promise<void>;
  close(): Promise<void>;
}

export async function sessionRig(): Promise<SessionRig> {
  const dir = mkdtempSync(join(tmpdir(), 'vu-fuzz-'));
  const path = join(dir, 'fuzz.sock');
  const bugs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const line = chunk.toString();
      if (line.includes('"level":50') || line.includes('"level":60')) bugs.push(line.slice(0, 2000));
      cb();
    },
  });
  const device = createDevice('edu', {});
  const server = new VfioUserServer({
    socketPath: path,
    device,
    logger: pino({ level: 'error' }, sink),
    dmaTimeoutMs: 50,
    versionTimeoutMs: 2000,
  });
  await server.start();
  let disconnects = 0;
  server.on('disconnect', () => disconnects++);
  const version = encodeMessage(
    { id: 0, command: Command.VERSION },
    encodeVersionRequest({
      major: 0,
      minor: 1,
      capabilities: Buffer.from('{"capabilities":{"max_msg_fds":8}}\0'),
    }),
  );
  let baseFds = -1;
  return {
    async exchange(msgs) {
      const before = disconnects;
      const conn = Connection.connect(path);
      let closed = false;
      await new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const finish = () => {
          if (timer) clearTimeout(timer);
          if (!closed) {
            closed = true;
            conn.close();
          }
          resolve();
        };
        conn.start(
          {
            onMessage: (_d, fds) => {
              for (const fd of fds) closeFd(fd); // the server's replies carry none; be safe anyway
            },
            onClose: () => finish(),
          },
          { maxMessageSize: 1 << 21 },
        );
        conn.send(version);
        for (const m of msgs) if (m.length >= 16) conn.send(m);
        // Let the server work through them (async handlers, server->client DMA timeouts of 50 ms).
        timer = setTimeout(finish, 5);
      });
      await until(() => disconnects !== before, 5000, 'the session to end after the client left', 1);
      if (bugs.length) throw new Error(`server logged an error: ${bugs.splice(0).join('\n')}`);
      const n = openFds();
      if (baseFds < 0) baseFds = n;
      else if (n > baseFds) {
        // closes land a turn later; give them a moment before calling it a leak
        await sleep(20);
        const m = openFds();
        if (m > baseFds) throw new Error(`fd leak: ${m} open, ${baseFds} at the start`);
      }
    },
    async close() {
      await server.close();
      device.close?.();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
