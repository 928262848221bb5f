// Loads the compiled addon (build/Release, or build/asan when VFIO_USER_NATIVE_BUILD=asan) and describes its raw
// surface. Nothing here is public API: lib/index.ts re-exports the typed wrappers built on top of it.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Layout of the package: dist/lib/addon.js -> ../../ is the package root (server/native). */
const pkgRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface NativeConnection {
  readonly fd: number;
  readonly queuedBytes: number;
  start(
    handlers: object,
    onMessage: (
      size: number,
      fds: number[] | undefined,
      data: Buffer | undefined,
      fdsTruncated?: true,
    ) => number,
    onClose: (err?: Error) => void,
    onDrain: (() => void) | undefined,
    maxMessageSize: number,
    exact: boolean,
    inbox: ArrayBuffer,
    outbox: ArrayBuffer,
  ): void;
  send(data: ArrayBufferView | ArrayBuffer, fds: number[] | undefined): boolean;
  sendOutbox(length: number, fds: number[] | undefined): boolean;
  pause(): void;
  resume(): void;
  flush(): void;
  close(): void;
  setMaxMessageSize(n: number): void;
  takeBuffered(): BufferedInput;
  prefill(data: ArrayBufferView, fds: number[] | undefined, fdsTruncated: boolean): void;
  setDirectReads(
    control: Int32Array,
    regions: readonly (Uint8Array | undefined)[],
    command: number,
    replyFlags: number,
    maxCount: number,
    sendHigh: number,
  ): void;
}

/** Received bytes not delivered yet, and the fds of the messages among them (`at`: offset in `data`). */
export interface BufferedInput {
  data: Buffer;
  /** `fdsTruncated`: the kernel dropped fds of that message (MSG_CTRUNC); `fds` is then empty. */
  groups: { at: number; fds: number[]; fdsTruncated?: true }[];
}

export interface NativeListener {
  readonly fd: number;
  start(onConnection: (fd: number) => void, onError: ((err: Error) => void) | undefined): void;
  resume(): void;
  pause(): void;
  close(): void;
}

export interface NativeWatcher {
  close(): void;
}

export interface RawRange {
  start: bigint;
  end: bigint;
}

// The map/unmap ioctls come in an async (threadpool) and a sync form taking the same arguments.
type MapDmaArgs = [
  fd: number,
  flags: number,
  iova: bigint,
  size: bigint,
  buffer: ArrayBuffer | null,
  bufferOffset: bigint | null,
  vaddr: bigint | null,
];
type UnmapDmaArgs = [fd: number, flags: number, iova: bigint, size: bigint];
type IoasMapArgs = [
  fd: number,
  ioasId: number,
  flags: number,
  iova: bigint,
  length: bigint,
  buffer: ArrayBuffer | null,
  bufferOffset: bigint | null,
  userVa: bigint | null,
];
type IoasMapFileArgs = [
  fd: number,
  ioasId: number,
  flags: number,
  fileFd: number,
  start: bigint,
  length: bigint,
  iova: bigint,
];
type IoasUnmapArgs = [fd: number, ioasId: number, iova: bigint, length: bigint];

export interface NativeAddon {
  NativeConnection: new (fd: number) => NativeConnection;
  NativeListener: new (fd: number) => NativeListener;
  NativeWatcher: new (fd: number, onReadable: (err?: Error) => void) => NativeWatcher;
  listenUnix(path: string, mode: number, backlog: number): { fd: number; dev: bigint; ino: bigint };
  connectUnix(path: string): number;
  socketpair(): [number, number];
  peerCred(fd: number): { pid: number; uid: number; gid: number };
  sendDatagramUnix(path: string, data: ArrayBufferView): number;
  bindDatagramUnix(path: string, mode: number): number;
  recvDatagram(fd: number): Buffer | null;

  mmap(fd: number, offset: bigint, length: number, prot: number, flags: number): ArrayBuffer;
  munmap(ab: ArrayBuffer): void;
  mapAddress(ab: ArrayBuffer): bigint;
  mappingCount(): number;
  PROT_READ: number;
  PROT_WRITE: number;
  MAP_SHARED: number;
  MAP_PRIVATE: number;
  MAP_POPULATE: number;
  MAP_NORESERVE: number;

  memfdCreate(
    name: string,
    size: bigint | number | undefined,
    allowSealing: boolean,
    cloexec: boolean,
  ): number;
  addSeals(fd: number, seals: number): void;
  getSeals(fd: number): number;
  fdInfo(fd: number): {
    type: string;
    dev: bigint;
    ino: bigint;
    size: bigint;
    mode: number;
    flags: number;
    blksize: number;
    fsType: number;
    rdev: bigint;
  };
  /** out: Float64Array(9), [5..9) = the sealed-file hint [1, dev, ino, seals] or out[5] = 0 (memory.ts). */
  fdInspect(fd: number, out: Float64Array): number;
  sameOpenFile(a: number, b: number): boolean;
  closeIfSameOpenFile(fd: number, kept: number): boolean;
  S_IFREG: number;
  pread(fd: number, buf: ArrayBufferView, offset: bigint): number;
  pwrite(fd: number, buf: ArrayBufferView, offset: bigint): number;
  closeFd(fd: number): void;
  dupFd(fd: number): number;
  openFds(): number;
  openPath(path: string, flags: number): number;
  fdFlags(fd: number): number;
  F_SEAL_SEAL: number;
  F_SEAL_SHRINK: number;
  F_SEAL_GROW: number;
  F_SEAL_WRITE: number;
  FD_CLOEXEC: number;
  O_RDONLY: number;
  O_WRONLY: number;
  O_RDWR: number;
  O_NONBLOCK: number;

  eventfd(initval: number, nonblock: boolean, semaphore: boolean): number;
  eventfdWrite(fd: number, value: bigint): void;
  eventfdRead(fd: number): bigint;

  guardedCopy(
    dst: Uint8Array,
    dstOffset: number,
    src: Uint8Array,
    srcOffset: number,
    length: number,
  ): boolean;
  setNonBlocking(fd: number): void;
  signalFd(fd: number, value: bigint | undefined): number;
  pipe(): [number, number];
  nofileLimit(): { soft: number; hard: number };
  setNofileLimit(soft: number): { soft: number; hard: number };

  vfioGetApiVersion(fd: number): number;
  vfioCheckExtension(fd: number, ext: number): number;
  vfioSetIommu(fd: number, type: number): void;
  vfioGroupGetStatus(fd: number): number;
  vfioGroupSetContainer(groupFd: number, containerFd: number): void;
  vfioGroupUnsetContainer(groupFd: number): void;
  vfioGroupGetDeviceFd(groupFd: number, name: string): number;
  vfioIommuGetInfo(fd: number): {
    flags: number;
    pgsizes: bigint;
    iovaRanges: RawRange[];
    dmaAvail?: number;
    migration?: { flags: number; pgsizeBitmap: bigint; maxDirtyBitmapSize: bigint };
    caps: { id: number; version: number; offset: number }[];
  };
  vfioMapDma(...a: MapDmaArgs): Promise<void>;
  vfioUnmapDma(...a: UnmapDmaArgs): Promise<bigint>;
  vfioMapDmaSync(...a: MapDmaArgs): undefined;
  vfioUnmapDmaSync(...a: UnmapDmaArgs): bigint;
  /** The lean synchronous forms: every operand in the ioctlArgs() block (src/job.c, lib/vfio.ts). */
  vfioMapDmaArgs(): undefined;
  vfioUnmapDmaArgs(): boolean;
  ioctlArgs(): ArrayBuffer;
  vfioDeviceGetInfo(fd: number): { flags: number; numRegions: number; numIrqs: number; capOffset: number };
  vfioDeviceGetRegionInfo(
    fd: number,
    index: number,
  ): {
    index: number;
    flags: number;
    size: bigint;
    offset: bigint;
    caps: { id: number; version: number; offset: number }[];
    sparseMmap?: { offset: bigint; size: bigint }[];
    type?: { type: number; subtype: number };
    msixMappable: boolean;
  };
  vfioDeviceGetIrqInfo(fd: number, index: number): { index: number; flags: number; count: number };
  vfioDeviceSetIrqs(
    fd: number,
    flags: number,
    index: number,
    start: number,
    count: number,
    data: number[] | boolean[] | undefined,
  ): void;
  vfioDeviceReset(fd: number): void;
  vfioDeviceFeature(fd: number, flags: number, data: Uint8Array | undefined): Buffer;
  vfioDeviceBindIommufd(fd: number, iommufd: number): number;
  vfioDeviceAttachPt(fd: number, ptId: number): number;
  vfioDeviceDetachPt(fd: number): void;

  iommufdIoasAlloc(fd: number): number;
  iommufdDestroy(fd: number, id: number): void;
  iommufdIovaRanges(fd: number, ioasId: number): { ranges: RawRange[]; alignment: bigint };
  iommufdAllowIovas(fd: number, ioasId: number, ranges: RawRange[]): void;
  iommufdIoasMap(...a: IoasMapArgs): Promise<bigint>;
  iommufdIoasMapFile(...a: IoasMapFileArgs): Promise<bigint>;
  iommufdIoasUnmap(...a: IoasUnmapArgs): Promise<bigint>;
  iommufdIoasMapSync(...a: IoasMapArgs): bigint;
  iommufdIoasMapFileSync(...a: IoasMapFileArgs): bigint;
  iommufdIoasUnmapSync(...a: IoasUnmapArgs): bigint;
  iommufdIoasMapArgs(): undefined;
  iommufdIoasMapFileArgs(): undefined;
  iommufdIoasUnmapArgs(): boolean;
  iommufdOption(
    fd: number,
    optionId: number,
    op: number,
    objectId: number,
    val64: bigint | undefined,
  ): bigint;

  layouts(): Layouts;

  blockIo(fd: number, write: boolean, offset: bigint, segments: Uint8Array[]): Promise<number>;
  blockFallocate(fd: number, mode: number, offset: bigint, length: bigint): Promise<number>;
  blockSync(fd: number): Promise<number>;
  blockReadNowait(fd: number, offset: bigint, segments: Uint8Array[]): number;
  FALLOC_FL_KEEP_SIZE: number;
  FALLOC_FL_PUNCH_HOLE: number;
  FALLOC_FL_ZERO_RANGE: number;
}

/** Compiler-computed uAPI facts (see layouts() in lib/index.ts). */
export interface Layouts {
  ioctl: Record<string, number>;
  size: Record<string, number>;
  offset: Record<string, number>;
  constant: Record<string, number>;
  headers: { linuxVersionCode: number; iommufdHeader: boolean; vfioCdevHeader: boolean };
}

/** Which build this process loaded: 'release' or 'asan' (VFIO_USER_NATIVE_BUILD=asan). */
export const buildVariant: 'release' | 'asan' =
  process.env.VFIO_USER_NATIVE_BUILD === 'asan' ? 'asan' : 'release';

/** Absolute path of the loaded .node file. */
export const addonPath = join(
  pkgRoot,
  'build',
  buildVariant === 'asan' ? 'asan' : 'Release',
  'vfio_user_native.node',
);

function load(): NativeAddon {
  if (!existsSync(addonPath)) {
    throw new Error(
      `vfio-user-native: ${addonPath} is missing; build it with \`node ${join(pkgRoot, 'scripts', 'build.mjs')}\``,
    );
  }
  const require = createRequire(import.meta.url);
  try {
    return require(addonPath) as NativeAddon;
  } catch (err) {
    if (buildVariant === 'asan') {
      const e = err as Error;
      e.message +=
        '\n(the ASan build needs LD_PRELOAD=$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so))';
    }
    throw err;
  }
}

export const addon: NativeAddon = load();
