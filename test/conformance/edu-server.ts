// Starts our server with the edu device on --socket-path PATH (a stand-in for `vfio-user-server --device edu`
// while the CLI is not there, and a way to run it with a logger). SIGTERM/SIGINT close it cleanly.
//
//   node test/dist/conformance/edu-server.js --socket-path PATH [--device edu]
import { parseArgs } from 'node:util';
import { VfioUserServer } from 'vfio-user-server';
import { loadCreateDevice } from './device-factory.js';

const { values } = parseArgs({
  options: { 'socket-path': { type: 'string' }, fd: { type: 'string' }, device: { type: 'string' } },
  strict: true,
});
const socketPath = values['socket-path'];
const fd = values.fd !== undefined ? Number(values.fd) : undefined;
if (socketPath !== undefined && fd !== undefined) {
  console.error('--socket-path and --fd are mutually exclusive');
  process.exit(2);
}
if (socketPath === undefined && fd === undefined) {
  console.error('usage: edu-server --socket-path PATH | --fd N [--device edu]');
  process.exit(2);
}
const createDevice = await loadCreateDevice();
const server = new VfioUserServer({
  ...(socketPath !== undefined ? { socketPath } : { fd: fd! }),
  device: createDevice(values.device ?? 'edu'),
});
try {
  await server.start();
} catch (e) {
  console.error(`cannot start: ${(e as Error).message}`);
  process.exit(1);
}
let closing = false;
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    if (closing) return;
    closing = true;
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
