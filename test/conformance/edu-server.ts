// Starts our server with the edu device on --socket-path PATH (a stand-in for `vfio-user-server --device edu`
// while the CLI is not there, and a way to run it with a logger). SIGTERM/SIGINT close it cleanly.
//
//   node test/dist/conformance/edu-server.js --socket-path PATH [--device edu]
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { type VfioUserDevice, VfioUserServer } from 'vfio-user-server';

type CreateDevice = (name: string, opts?: Record<string, unknown>) => VfioUserDevice;

/** `createDevice` from the server package (its main export when there, else its devices module). */
async function loadCreateDevice(): Promise<CreateDevice> {
  const main = (await import('vfio-user-server')) as unknown as { createDevice?: CreateDevice };
  if (main.createDevice) return main.createDevice;
  const entry = fileURLToPath(import.meta.resolve('vfio-user-server'));
  const mod = (await import(pathToFileURL(join(dirname(entry), 'devices', 'index.js')).href)) as {
    createDevice: CreateDevice;
  };
  return mod.createDevice;
}

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
