// A deliberately broken vfio-user "server" for the conformance suite's self-test: it listens on --socket-path,
// relays each client to a real server on --upstream (one upstream connection per client, fds included), and
// injects one fault:
//
//   none            relay faithfully (the control: the suite must pass through it)
//   errno           every error reply carries ENOTTY instead of the server's errno
//   reply-noreply   NO_REPLY is stripped from commands, so the server answers posted commands
//   leak-fds        fds from the client are forwarded but never closed here (the "server" leaks them)
//   oversize[:C,..] successful replies (to commands C, default all) grow by 8 zero bytes (size field updated)
//   drop-reply:CMD  replies to command CMD (default 13, DEVICE_RESET) are dropped
//   crash:CMD       the process kills itself with SIGSEGV when a client sends command CMD (a crash)
//   exit:CMD        the process exits with status 70 when a client sends command CMD (an exit, not a crash)
//   dma-fds         every server->client DMA_READ/DMA_WRITE request carries an extra fd (/dev/null)
//
//   node test/dist/conformance/fault-proxy.js --socket-path P --upstream U --mode MODE
import { closeSync, openSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Connection, closeFd, Listener } from 'vfio-user-native';

const { values } = parseArgs({
  options: { 'socket-path': { type: 'string' }, upstream: { type: 'string' }, mode: { type: 'string' } },
  strict: true,
});
const socketPath = values['socket-path'];
const upstream = values.upstream;
const mode = values.mode ?? 'none';
if (!socketPath || !upstream) {
  console.error('usage: fault-proxy --socket-path P --upstream U --mode MODE');
  process.exit(2);
}
const [kind, arg] = mode.split(':');
const dropCmd = kind === 'drop-reply' ? Number(arg ?? 13) : -1;
const crashCmd = kind === 'crash' || kind === 'exit' ? Number(arg ?? 13) : -1;
const oversizeCmds = kind === 'oversize' && arg ? new Set(arg.split(',').map(Number)) : null;
if (
  ![
    'none',
    'errno',
    'reply-noreply',
    'leak-fds',
    'oversize',
    'drop-reply',
    'crash',
    'exit',
    'dma-fds',
  ].includes(kind!)
) {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}

const ENOTTY = 25;
const NO_REPLY = 0x10;
const ERROR = 0x20;
const leaked: number[] = [];

function toServer(data: Buffer): Buffer {
  if (data.length >= 16 && data.readUInt16LE(2) === crashCmd) {
    if (kind === 'exit') process.exit(70);
    process.kill(process.pid, 'SIGSEGV');
  }
  if (kind === 'reply-noreply' && data.length >= 16) {
    const flags = data.readUInt32LE(8);
    if ((flags & 0xf) === 0 && flags & NO_REPLY) {
      const b = Buffer.from(data);
      b.writeUInt32LE(flags & ~NO_REPLY, 8);
      return b;
    }
  }
  return data;
}

/** The transformed reply, or null to drop it. */
function toClient(data: Buffer): Buffer | null {
  if (data.length < 16) return data;
  const flags = data.readUInt32LE(8);
  const isReply = (flags & 0xf) === 1;
  if (!isReply) return data;
  if (kind === 'errno' && flags & ERROR) {
    const b = Buffer.from(data);
    b.writeUInt32LE(ENOTTY, 12);
    return b;
  }
  if (kind === 'oversize' && !(flags & ERROR) && (!oversizeCmds || oversizeCmds.has(data.readUInt16LE(2)))) {
    const b = Buffer.concat([data, Buffer.alloc(8)]);
    b.writeUInt32LE(b.length, 4);
    return b;
  }
  if (kind === 'drop-reply' && data.readUInt16LE(2) === dropCmd) return null;
  return data;
}

function relay(down: Connection): void {
  let up: Connection;
  try {
    up = Connection.connect(upstream!);
  } catch (e) {
    console.error(`upstream: ${(e as Error).message}`);
    down.close();
    return;
  }
  const release = (fds: number[], fromClient: boolean) => {
    for (const fd of fds) {
      if (fromClient && kind === 'leak-fds') leaked.push(fd);
      else closeFd(fd);
    }
  };
  down.start(
    {
      onMessage(data, fds) {
        up.send(toServer(data), fds);
        release(fds, true);
      },
      onClose() {
        up.close();
      },
    },
    { framing: 'exact' },
  );
  up.start(
    {
      onMessage(data, fds) {
        const out = toClient(data);
        const isRequest = data.length >= 16 && (data.readUInt32LE(8) & 0xf) === 0;
        if (out && kind === 'dma-fds' && isRequest) {
          const extra = openSync('/dev/null', 'r');
          down.send(out, [...fds, extra]);
          closeSync(extra);
        } else if (out) down.send(out, fds);
        release(fds, false);
      },
      onClose() {
        down.close();
      },
    },
    { framing: 'exact' },
  );
}

const listener = Listener.listen(socketPath);
listener.start(relay, (e) => console.error(`accept: ${e.message}`));
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    listener.close();
    process.exit(0);
  });
}
