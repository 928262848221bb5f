// A second reference server, for the conformance suite's self-test only. It is our server (edu device) running
// in this process on a private socket, presented to clients through a relay, and it deviates from our server in
// known, documented ways that the spec allows (each one is something a real server does):
//
//   1. It exits with status 1 once a client fails to negotiate (an error reply before VERSION succeeded, or a
//      client that leaves before negotiating), as libvfio-user's samples do (spec "Client Disconnection": "the
//      server can automatically exit").
//   2. It answers the legal alternative errnos: ENOSYS instead of EINVAL for an unknown command, ENOTSUP instead
//      of EINVAL for an unsupported DEVICE_FEATURE index (the spec fixes neither).
//   3. It accepts more DMA maps than the 65,535 it advertises (max_dma_maps binds the client, not the server).
//   4. DEVICE_RESET keeps COMMAND and the BAR addresses in config space (it saves and restores them around the
//      reset, as Linux VFIO_DEVICE_RESET does) instead of returning them to their power-on values.
//
// The conformance suite must grade every case PASS, WARN or SKIP against it, never FAIL; deviant.test.ts holds
// the exact verdict of every case.
//
//   node test/dist/conformance/deviant-server.js --socket-path PATH | --fd N
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Connection, closeFd, Listener } from 'vfio-user-native';
import { type VfioUserDevice, VfioUserServer } from 'vfio-user-server';
import { loadCreateDevice } from './device-factory.js';

const { values } = parseArgs({
  options: { 'socket-path': { type: 'string' }, fd: { type: 'string' } },
  strict: true,
});
const socketPath = values['socket-path'];
const fd = values.fd !== undefined ? Number(values.fd) : undefined;
if ((socketPath === undefined) === (fd === undefined)) {
  console.error('usage: deviant-server --socket-path PATH | --fd N (exactly one)');
  process.exit(2);
}

const ENOSYS = 38;
const ENOTSUP = 95;
const EINVAL = 22;
const ERROR = 0x20;
const CONFIG = 7;
const KNOWN_COMMANDS = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18]);
const KNOWN_FEATURES = new Set([1, 2, 6, 7, 8]);

/** Deviation 4: COMMAND (0x04) and the six BAR dwords (0x10-0x27) survive a reset. */
function keepConfigAcrossReset(dev: VfioUserDevice): void {
  const reset = dev.reset.bind(dev);
  dev.reset = () => {
    // edu answers config reads synchronously (a device may answer asynchronously in general).
    const command = Buffer.from(dev.regionRead(CONFIG, 0x04n, 2) as Uint8Array);
    const bars = Buffer.from(dev.regionRead(CONFIG, 0x10n, 24) as Uint8Array);
    const restore = () => {
      dev.regionWrite(CONFIG, 0x10n, bars);
      dev.regionWrite(CONFIG, 0x04n, command);
    };
    const r = reset();
    if (r && typeof (r as Promise<void>).then === 'function') return (r as Promise<void>).then(restore);
    restore();
  };
}

// A live socket at the path belongs to another instance: refuse (exit 1); a stale file is replaced. (Looked up
// in /proc/net/unix: connecting to find out would make that instance exit, by deviation 1.)
if (socketPath && existsSync(socketPath)) {
  const live = readFileSync('/proc/net/unix', 'utf8')
    .split('\n')
    .some(
      (l) =>
        l.endsWith(` ${socketPath}`) &&
        (Number.parseInt(l.trim().split(/\s+/)[3] ?? '0', 16) & 0x10000) !== 0,
    );
  if (live) {
    console.error(`${socketPath} is in use by a live server`);
    process.exit(1);
  }
  rmSync(socketPath, { force: true });
}
const device = (await loadCreateDevice())('edu');
keepConfigAcrossReset(device);
const inner = join(tmpdir(), `vfu-deviant-${process.pid}.sock`);
const server = new VfioUserServer({ socketPath: inner, device });
await server.start();
// Deviation 3: the address space takes up to 100,000 live maps; VERSION still advertises 65,535.
server.dma.configure({ maxMappings: 100_000 });

function exitSoon(): void {
  // Stop taking clients now; exit once the error reply has reached this one.
  if (!listenerClosed) {
    listenerClosed = true;
    listener.close();
    if (socketPath) rmSync(socketPath, { force: true });
  }
  setTimeout(() => shutdown(1), 50);
}

function relay(down: Connection): void {
  let up: Connection;
  try {
    up = Connection.connect(inner);
  } catch (e) {
    console.error(`inner server: ${(e as Error).message}`);
    down.close();
    return;
  }
  let negotiated = false;
  const features = new Map<number, number>();
  down.start(
    {
      onMessage(data, fds) {
        if (data.length >= 24 && data.readUInt16LE(2) === 16 && (data.readUInt32LE(8) & 0xf) === 0)
          features.set(data.readUInt16LE(0), data.readUInt32LE(20) & 0xffff);
        up.send(data, fds);
        for (const f of fds) closeFd(f);
      },
      onClose() {
        up.close();
        if (!negotiated) exitSoon();
      },
    },
    { framing: 'exact' },
  );
  up.start(
    {
      onMessage(data, fds) {
        let out = data;
        const isReply = data.length >= 16 && (data.readUInt32LE(8) & 0xf) === 1;
        if (isReply) {
          const cmd = data.readUInt16LE(2);
          const failed = (data.readUInt32LE(8) & ERROR) !== 0;
          if (cmd === 1 && !failed) negotiated = true;
          if (failed) {
            // Deviation 2.
            let errno = data.readUInt32LE(12);
            if (!KNOWN_COMMANDS.has(cmd)) errno = ENOSYS;
            const feature = cmd === 16 ? features.get(data.readUInt16LE(0)) : undefined;
            if (feature !== undefined && !KNOWN_FEATURES.has(feature) && errno === EINVAL) errno = ENOTSUP;
            if (errno !== data.readUInt32LE(12)) {
              out = Buffer.from(data);
              out.writeUInt32LE(errno, 12);
            }
            // Deviation 1.
            if (!negotiated) exitSoon();
          }
        }
        down.send(out, fds);
        for (const f of fds) closeFd(f);
      },
      onClose() {
        down.close();
      },
    },
    { framing: 'exact' },
  );
}

const listener = fd !== undefined ? Listener.adopt(fd) : Listener.listen(socketPath!);
listener.start(relay, (e) => console.error(`accept: ${e.message}`));

let listenerClosed = false;
let closing = false;
function shutdown(code: number): void {
  if (closing) return;
  closing = true;
  if (!listenerClosed) {
    listenerClosed = true;
    listener.close();
    if (socketPath) rmSync(socketPath, { force: true });
  }
  server.close().then(
    () => process.exit(code),
    () => process.exit(code),
  );
}
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => shutdown(0));
