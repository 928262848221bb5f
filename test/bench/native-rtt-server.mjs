// Echo server on the vfio-user-native addon for test/bench/native-rtt.mjs: answers every message with a 16-byte
// reply header (same id/command, size 16, flags REPLY). Usage: node native-rtt-server.mjs <path> [bulk|exact]
import { Listener } from '../../server/native/dist/lib/index.js';

const [path, framing = 'bulk'] = process.argv.slice(2);
const lis = Listener.listen(path);
lis.start((conn) => {
  lis.close();
  conn.start(
    {
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
    { framing },
  );
});
process.stdout.write('ready\n');
