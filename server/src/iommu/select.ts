// Choosing and creating the host IOMMU backend (`--iommu none|vfio|iommufd|auto`), docs/iommu-mirroring.md.
//
// - none: no host IOMMU (emulated devices; DMA reaches guest memory through the server's own mappings).
// - vfio: the VFIO type1 container (`/dev/vfio/vfio` + the device's group). Works on every Debian kernel.
// - iommufd: `/dev/iommu` + the device's VFIO cdev (needs CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV).
// - auto: iommufd when /dev/iommu exists and the device has a VFIO cdev, else vfio; `none` when the device is not
//   a passed-through host device (no `host=` and no pre-opened fds).
//
// Pre-opened fds (`--iommufd-fd`, `--vfio-container-fd`, `--vfio-group-fd`, `--vfio-device-fd`) come from a
// management layer, like QEMU's `-object iommufd,fd=` and `-device vfio-pci,fd=`; the backend owns them from
// then on. Under `auto`, an iommufd fd selects iommufd and a container/group fd selects vfio.
//
// The returned backend is already opened (container/group/IOMMU set and device fd obtained, or bound and attached
// to a fresh IOAS), so a misconfiguration fails at start-up; the server calls attach() for the facts. For a
// VFIO backend, hand the same object to the passthrough device (`createDevice('vfio-pci', { host, iommu })`): it
// takes the device fd from it, so the device DMAs through exactly the mappings the mirror installs.

import { existsSync, readdirSync } from 'node:fs';
import { fdInfo } from 'vfio-user-native';
import { type DeviceLogger, normaliseBdf, silentLogger } from '../device.js';
import type { HostFacts, IommuBackend } from './backend.js';
import type { HostFds } from './host-device.js';
import { IommufdBackend } from './iommufd.js';
import { NoneBackend } from './none.js';
import { VfioType1Backend } from './vfio-type1.js';

export const IOMMU_CHOICES = ['none', 'vfio', 'iommufd', 'auto'] as const;
export type IommuChoice = (typeof IOMMU_CHOICES)[number];

export function isIommuChoice(s: string): s is IommuChoice {
  return (IOMMU_CHOICES as readonly string[]).includes(s);
}

export interface CreateIommuBackendOptions {
  /** Pre-opened host fds (ownership passes to the backend). */
  hostFds?: HostFds;
  /** The device the server exposes: its name and `--device` parameters (`host=0000:00:03.0` for vfio-pci). */
  device: { name: string; params: Record<string, string> };
  log?: DeviceLogger;
  /** Root of /dev and /sys lookups for `auto` (tests). Default ''. */
  root?: string;
}

/** The host PCI address the device parameters name, normalised (undefined when there is none). */
export function hostBdfOf(device: { params: Record<string, string> }): string | undefined {
  const host = device.params.host;
  return host === undefined || host === '' ? undefined : normaliseBdf(host);
}

/** Whether the PCI device has a VFIO cdev (/sys/bus/pci/devices/<bdf>/vfio-dev/vfioN). */
export function hasVfioCdev(bdf: string, root = ''): boolean {
  try {
    return readdirSync(`${root}/sys/bus/pci/devices/${bdf}/vfio-dev`).some((n) => /^vfio\d+$/.test(n));
  } catch {
    return false;
  }
}

/** Resolves `auto` (and checks the others' prerequisites) to the backend to build. */
export function resolveIommuChoice(
  choice: IommuChoice,
  o: Pick<CreateIommuBackendOptions, 'hostFds' | 'device' | 'root'>,
): 'none' | 'vfio' | 'iommufd' {
  const fds = o.hostFds ?? {};
  const bdf = hostBdfOf(o.device);
  const hasHost = bdf !== undefined || fds.device !== undefined;
  if (choice === 'none') return 'none';
  if (choice === 'vfio' || choice === 'iommufd') {
    if (!hasHost) {
      throw new Error(
        `--iommu ${choice} needs a passed-through host device (--device vfio-pci,host=DDDD:BB:DD.F or --vfio-device-fd)`,
      );
    }
    return choice;
  }
  if (fds.iommufd !== undefined) return 'iommufd';
  if (fds.container !== undefined || fds.group !== undefined) return 'vfio';
  if (!hasHost) return 'none';
  if (bdf === undefined) {
    // Only a device fd: a cdev is a character device, a group-obtained device fd an anonymous inode.
    return fdInfo(fds.device!).type === 'char' && existsSync(`${o.root ?? ''}/dev/iommu`)
      ? 'iommufd'
      : 'vfio';
  }
  return existsSync(`${o.root ?? ''}/dev/iommu`) && hasVfioCdev(bdf, o.root) ? 'iommufd' : 'vfio';
}

/** Creates (and opens) the backend for `choice`. Rejects with an errno Error when the host side cannot be set up. */
export async function createIommuBackend(
  choice: IommuChoice,
  o: CreateIommuBackendOptions,
): Promise<IommuBackend> {
  const log = o.log ?? silentLogger;
  const kind = resolveIommuChoice(choice, o);
  const bdf = hostBdfOf(o.device);
  const fds = o.hostFds ?? {};
  if (kind === 'none') return new NoneBackend();
  if (kind === 'vfio') {
    if (fds.iommufd !== undefined) throw new Error('--iommufd-fd is only valid with --iommu iommufd/auto');
    const b = new VfioType1Backend({ bdf, hostFds: fds, log });
    b.open();
    log.info({ choice, backend: b.name, bdf }, 'host IOMMU backend opened');
    return b;
  }
  if (fds.container !== undefined || fds.group !== undefined) {
    throw new Error('--vfio-container-fd/--vfio-group-fd are only valid with --iommu vfio/auto');
  }
  const b = new IommufdBackend({ bdf, hostFds: fds, log });
  b.open();
  log.info({ choice, backend: b.name, bdf }, 'host IOMMU backend opened');
  return b;
}

/**
 * Hand-over (docs/handover.md): the backend of a previous process rebuilt around its fds (`fds` by role, owned by
 * the backend from here on) and `meta` (BackendHandover), with no host set-up call: its entries stay as they are.
 */
export function adoptIommuBackend(
  name: string,
  fds: Record<string, number>,
  meta: Record<string, unknown>,
  log: DeviceLogger = silentLogger,
): IommuBackend {
  const facts = meta.facts as HostFacts;
  if (name === 'none') return new NoneBackend();
  if (name === 'vfio-type1') {
    const b = new VfioType1Backend({
      hostFds: {
        container: fds.container!,
        ...(fds.group! >= 0 && { group: fds.group }),
        device: fds.device!,
      },
      adopt: { facts, unmapAll: meta.unmapAll === true },
      log,
    });
    b.open();
    return b;
  }
  if (name === 'iommufd') {
    const b = new IommufdBackend({
      hostFds: { iommufd: fds.iommufd!, device: fds.device! },
      adopt: {
        facts,
        devId: Number(meta.devId),
        ioas: Number(meta.ioas),
        hwpt: Number(meta.hwpt),
        mapFile: meta.mapFile === true,
      },
      log,
    });
    b.open();
    return b;
  }
  throw new Error(`cannot adopt a host IOMMU backend '${name}'`);
}
