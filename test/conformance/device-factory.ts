// `createDevice` from the server package (its main export when there, else its devices module), for the test
// servers in this directory.
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { VfioUserDevice } from 'vfio-user-server';

export type CreateDevice = (name: string, opts?: Record<string, unknown>) => VfioUserDevice;

export async function loadCreateDevice(): Promise<CreateDevice> {
  const main = (await import('vfio-user-server')) as unknown as { createDevice?: CreateDevice };
  if (main.createDevice) return main.createDevice;
  const entry = fileURLToPath(import.meta.resolve('vfio-user-server'));
  const mod = (await import(pathToFileURL(join(dirname(entry), 'devices', 'index.js')).href)) as {
    createDevice: CreateDevice;
  };
  return mod.createDevice;
}
