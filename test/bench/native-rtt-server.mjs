// Echo server on the vfio-user-native addon for test/bench/native-rtt.mjs: answers every message with a 16-byte
// reply header (same id/command, size 16, flags REPLY).
// Usage: node native-rtt-server.mjs <path> [bulk|exact|inplace]
//   bulk, exact: onMessage gets a copy and send()s a new reply Buffer (the full way, with that framing);
//   inplace:     exact framing, onInboxMessage builds the reply in the outbox and returns its length (what the
//                session's fast path does, with no protocol work at all: the floor of that design); fds that
//                come with a message are closed. test/bench/hot-paths.mjs runs it as its event-loop floor.
import { closeFd, Listener } from '../../server/native/dist/lib/index.js';

const [path, mode = 'bulk'] = process.argv.slice(2);
const lis = Listener.listen(path);
lis.start((conn) => {
  lis.close();
  const out = conn.outbox;
  const inplace =
    mode === 'inplace'
      ? (inbox, _size, fds) => {
          if (fds) for (const fd of fds) closeFd(fd); // a DMA_MAP's fd (hot-paths bench): ours, closed
          out.set(inbox.subarray(0, 4), 0);
          out.writeUInt32LE(16, 4);
          out.writeUInt32LE(1, 8);
          out.writeUInt32LE(0, 12);
          return 16;
        }
      : undefined;
  conn.start(
    {
      onInboxMessage: inplace,
      onMessage(data, fds) {
        if (fds.length) throw new Error('unexpected fds');
        const reply = Buffer.allocUnsafe(16);
        data.copy(reply, 0, 0, 4);
        reply.writeUInt32LE(16, 4);
        reply.writeUInt32LE(1, 8);
        reply.writeUInt32LE(0, 12);
        conn.send(reply);
      },
      onClose() {
        process.exit(0);
      },
    },
    { framing: mode === 'bulk' ? 'bulk' : 'exact' },
  );
});
process.stdout.write('ready\n');
