// Booting Linux guests under QEMU/TCG for the VM tests (docs/testing.md).
//
// test/setup/prepare-guest.sh caches the kernels, modules and uAPI headers and writes a manifest
// ($VFIO_USER_CACHE/guest.json, default /var/cache/vfio-user-node). This module reads it, builds static guest
// programs and a busybox initramfs whose /init loads the VFIO modules, binds devices to vfio-pci, runs a shell
// payload and powers off, and boots QEMU (q35 + intel-iommu, TCG only: the machines' /dev/kvm cannot run stock
// guests) with a hard timeout. Optionally the host root is shared read-only over 9p so the guest can run the
// project's real code with the host's Node (`chroot /mnt/host /usr/bin/node ...`).

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';
import { cacheDir, findQemu, type QemuExit, spawnQemu } from './qemu.js';

/** The project root (this file is test/lib/guest.ts, compiled to test/dist/lib/guest.js). */
export const projectRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

// ------------------------------------------------------------------------------------------------------------
// Manifest

export interface GuestKernel {
  /** 'debian' (Debian trixie 6.12, type1 only) or 'iommufd' (self-built, IOMMUFD + cdev + 9p built in). */
  name: string;
  description: string;
  /** vmlinuz / bzImage. */
  kernel: string;
  config: string;
  release: string;
  /** The kernel has /dev/iommu and VFIO cdevs. */
  iommufd: boolean;
  /**
   * Decompressed modules in load order (empty when built in): VFIO, the 9p host share, and (Debian kernel) the
   * NVMe driver and ext4 (which also mounts ext2) for the NVMe device tests; absent = not available.
   */
  modules: { vfio: string[]; '9p': string[]; nvme?: string[]; ext4?: string[] };
}

export interface GuestManifest {
  version: 1;
  cache: string;
  qemu: string;
  /** Static busybox for the initramfs. */
  busybox: string;
  /** linux-libc-dev from trixie-backports: `-isystem` each of `include` to compile guest programs. */
  uapi: { version: string; include: string[] };
  kernels: Record<string, GuestKernel>;
}

export function guestManifestPath(): string {
  return join(cacheDir(), 'guest.json');
}

/** The manifest, or null when test/setup/prepare-guest.sh has not run. */
export function tryReadGuestManifest(): GuestManifest | null {
  const p = guestManifestPath();
  if (!existsSync(p)) return null;
  const m = JSON.parse(readFileSync(p, 'utf8')) as GuestManifest;
  if (m.version !== 1) throw new Error(`${p}: unsupported manifest version ${m.version}`);
  return m;
}

/** The manifest; throws with the fix when it is missing. */
export function readGuestManifest(): GuestManifest {
  const m = tryReadGuestManifest();
  if (!m)
    throw new Error(
      `${guestManifestPath()} not found: run \`bash test/setup/prepare-guest.sh\` (make guest)`,
    );
  return m;
}

/** A kernel by name ('debian' | 'iommufd'), or null when the manifest lacks it (or is missing). */
export function guestKernel(name: string, manifest = tryReadGuestManifest()): GuestKernel | null {
  const k = manifest?.kernels[name];
  return k && existsSync(k.kernel) ? k : null;
}

// ------------------------------------------------------------------------------------------------------------
// Static guest programs

let gccVersion: string | null = null;

/**
 * Compiles a C file for the guest with `gcc -static -O2` against the trixie-backports uAPI headers, cached in
 * <cache>/bin/<name>-<hash of source, flags, gcc and headers>. Returns the binary's path.
 */
export async function buildGuestProgram(source: string, extraFlags: string[] = []): Promise<string> {
  const m = readGuestManifest();
  gccVersion ??= spawnSync('gcc', ['-dumpfullversion'], { encoding: 'utf8' }).stdout.trim();
  const flags = [
    '-static',
    '-O2',
    '-Wall',
    '-Wextra',
    '-Werror',
    ...m.uapi.include.flatMap((d) => ['-isystem', d]),
  ];
  flags.push(...extraFlags);
  // Headers beside the source (shared helpers such as guest-check.h) are part of what is built.
  const srcDir = dirname(source);
  const headers = readdirSync(srcDir)
    .filter((f) => f.endsWith('.h'))
    .sort();
  const hash = createHash('sha256').update(readFileSync(source));
  for (const h of headers) hash.update(h).update(readFileSync(join(srcDir, h)));
  const key = hash
    .update(JSON.stringify([flags, gccVersion, m.uapi.version]))
    .digest('hex')
    .slice(0, 16);
  const dir = join(m.cache, 'bin');
  const out = join(dir, `${basename(source).replace(/\.c$/, '')}-${key}`);
  if (existsSync(out)) return out;
  mkdirSync(dir, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  await run('gcc', [...flags, '-o', tmp, source]);
  renameSync(tmp, out);
  return out;
}

function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      err += d;
    });
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${err}`)),
    );
  });
}

// ------------------------------------------------------------------------------------------------------------
// Initramfs

/** A file to put into the initramfs: copied from `source`, or written from `data`. */
export interface GuestFile {
  /** Absolute path inside the guest, e.g. '/bin/edu-vfio'. */
  path: string;
  source?: string;
  data?: string | Uint8Array;
  /** Default 0o755. */
  mode?: number;
}

export interface InitramfsOptions {
  kernel: GuestKernel;
  /**
   * Shell payload run by /init (busybox sh) with stdout+stderr on the console. Environment: MODE (`vfiotest=`),
   * BDF (first device bound to vfio-pci), BDFS (all of them), HOSTROOT (/mnt/host when shared).
   */
  script: string;
  files?: GuestFile[];
  /** Devices to bind to vfio-pci, as 'vendor:device' in hex, e.g. '1234:11e8'. */
  bind?: string[];
  /** Written to /sys/module/vfio_iommu_type1/parameters/dma_entry_limit before the payload. */
  dmaEntryLimit?: number;
  /** Mount the 9p share `hostroot` (read-only host root) at /mnt/host, with proc/sys/dev, /dev/shm and /tmp. */
  hostRoot?: boolean;
  /** Keep kernel messages on the console during the payload (default: off, so they cannot split its lines). */
  kernelLog?: boolean;
  /** Extra module sets to load before the payload (in this order), e.g. ['nvme', 'ext4']. */
  moduleSets?: ('nvme' | 'ext4')[];
}

/** Markers /init prints; the payload output is what lies between BEGIN and END. */
export const GUEST_MARK = '@@vfio-guest:';

/** Quotes a string for sh. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * A payload line that runs the host's Node inside the guest over the 9p share (needs `hostRoot`):
 * `chroot /mnt/host /bin/sh -c 'cd CWD && exec [env K=V...] /usr/bin/node ARGS'` (CWD defaults to the project
 * root). The variables go through env(1): `exec K=V node` is no assignment to a shell, which looks for a command
 * named `K=V` ("exec: K=V: not found").
 */
export function nodeInGuest(
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): string {
  const env = Object.entries(opts.env ?? {}).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
      throw new Error(`nodeInGuest: bad environment variable name '${k}'`);
    return shellQuote(`${k}=${v}`);
  });
  const node = [
    ...(env.length > 0 ? ['env', ...env] : []),
    shellQuote(process.execPath),
    ...args.map(shellQuote),
  ];
  const inner = `cd ${shellQuote(opts.cwd ?? projectRoot)} && exec ${node.join(' ')}`;
  return `chroot /mnt/host /bin/sh -c ${shellQuote(inner)}`;
}

function initScript(o: InitramfsOptions, modules: string[]): string {
  const M = GUEST_MARK;
  const lines = [
    '#!/bin/sh',
    '# Generated by test/lib/guest.ts',
    'export PATH=/bin:/sbin:/usr/bin:/usr/sbin',
    'mount -t proc proc /proc',
    'mount -t sysfs sysfs /sys',
    'mount -t devtmpfs devtmpfs /dev 2>/dev/null',
    'mkdir -p /dev/shm /tmp && mount -t tmpfs tmpfs /dev/shm && mount -t tmpfs tmpfs /tmp',
    `echo "${M} init uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"`,
    `MODE=$(sed -n 's/.*vfiotest=\\([^ ]*\\).*/\\1/p' /proc/cmdline)`,
    'export MODE',
  ];
  for (const m of modules) {
    lines.push(`insmod /mods/${m} || echo "${M} insmod ${m} FAILED"`);
  }
  lines.push(
    'BDFS=',
    'bind_vfio() {',
    '  n=0',
    '  for dev in /sys/bus/pci/devices/*; do',
    '    [ "$(cat $dev/vendor)" = "0x$1" ] && [ "$(cat $dev/device)" = "0x$2" ] || continue',
    '    bdf=$(basename $dev)',
    '    [ -e $dev/driver ] && echo $bdf > $dev/driver/unbind',
    '    echo vfio-pci > $dev/driver_override',
    '    echo $bdf > /sys/bus/pci/drivers_probe 2>/dev/null',
    '    case "$(readlink $dev/driver)" in',
    `      */vfio-pci) echo "${M} bound $bdf ($1:$2) to vfio-pci, iommu group $(basename "$(readlink $dev/iommu_group)")"; BDFS="$BDFS $bdf"; n=$((n + 1)) ;;`,
    `      *) echo "${M} bind $bdf ($1:$2) to vfio-pci FAILED" ;;`,
    '    esac',
    '  done',
    `  [ $n -gt 0 ] || echo "${M} no PCI device $1:$2"`,
    '}',
  );
  for (const id of new Set((o.bind ?? []).map((b) => b.toLowerCase()))) {
    const m = /^([0-9a-f]{4}):([0-9a-f]{4})$/.exec(id);
    if (!m) throw new Error(`bind: '${id}' is not vendor:device in hex`);
    lines.push(`bind_vfio ${m[1]} ${m[2]}`);
  }
  // Unquoted echo trims the leading blank; the first word is the first device.
  lines.push('BDFS=$(echo $BDFS)', "BDF=$(echo $BDFS | cut -d' ' -f1)", 'export BDF BDFS');
  if (o.dmaEntryLimit !== undefined) {
    const p = '/sys/module/vfio_iommu_type1/parameters/dma_entry_limit';
    lines.push(`echo ${Math.trunc(o.dmaEntryLimit)} > ${p} && echo "${M} dma_entry_limit=$(cat ${p})"`);
  }
  if (o.hostRoot) {
    lines.push(
      'mkdir -p /mnt/host',
      // cache=loose: the share is read-only and does not change while the guest runs; caching makes Node's
      // module loading over 9p several times faster.
      `if mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /mnt/host; then`,
      '  mount -t proc proc /mnt/host/proc',
      '  mount -t sysfs sysfs /mnt/host/sys',
      '  mount -t devtmpfs devtmpfs /mnt/host/dev',
      '  mkdir -p /mnt/host/dev/shm && mount -t tmpfs -o mode=1777 tmpfs /mnt/host/dev/shm',
      // A writable /tmp for the guest; when the project itself lives under /tmp (a CI clone), keep it visible
      // through the tmpfs by binding it back at the same path.
      `  KEEP=${projectRoot.startsWith('/tmp/') ? shellQuote(projectRoot) : "''"}`,
      '  if [ -n "$KEEP" ]; then mkdir -p /mnt/keep && mount --bind "/mnt/host$KEEP" /mnt/keep; fi',
      '  mount -t tmpfs -o mode=1777 tmpfs /mnt/host/tmp',
      '  if [ -n "$KEEP" ]; then mkdir -p "/mnt/host$KEEP" && mount --bind /mnt/keep "/mnt/host$KEEP"; fi',
      '  export HOSTROOT=/mnt/host',
      `  echo "${M} host root mounted at /mnt/host"`,
      'else',
      `  echo "${M} 9p mount of hostroot FAILED"`,
      'fi',
    );
  }
  if (!o.kernelLog) lines.push('dmesg -n 1');
  lines.push(
    `echo "${M} BEGIN mode=$MODE bdf=$BDF uptime=$(cut -d' ' -f1 /proc/uptime)"`,
    'sh /payload.sh < /dev/console 2>&1',
    'rc=$?',
    `echo "${M} END rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"`,
    'sync',
    'poweroff -f',
    '',
  );
  return lines.join('\n');
}

let busyboxApplets: string[] | null = null;

/** Builds a gzip'ed newc initramfs for `opts` at `outFile` (busybox + applets, modules, files, /init). */
export async function buildInitramfs(opts: InitramfsOptions, outFile: string): Promise<void> {
  const m = readGuestManifest();
  const root = mkdtempSync(join(tmpdir(), 'vfio-initramfs-'));
  try {
    for (const d of [
      'bin',
      'sbin',
      'usr/bin',
      'usr/sbin',
      'proc',
      'sys',
      'dev',
      'tmp',
      'mods',
      'etc',
      'mnt',
      'root',
    ]) {
      mkdirSync(join(root, d), { recursive: true });
    }
    copyFileSync(m.busybox, join(root, 'bin/busybox'));
    chmodSync(join(root, 'bin/busybox'), 0o755);
    busyboxApplets ??= spawnSync(m.busybox, ['--list-full'], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter((l) => l && !l.includes('..'));
    for (const a of busyboxApplets) {
      const p = join(root, a);
      if (p === join(root, 'bin/busybox') || existsSync(p)) continue;
      mkdirSync(dirname(p), { recursive: true });
      symlinkSync('/bin/busybox', p);
    }
    const extra = (opts.moduleSets ?? []).map((set) => {
      const list = opts.kernel.modules[set];
      if (!list) throw new Error(`kernel '${opts.kernel.name}' has no '${set}' modules (prepare-guest.sh)`);
      return list;
    });
    const mods = [
      ...opts.kernel.modules.vfio,
      ...(opts.hostRoot ? opts.kernel.modules['9p'] : []),
      ...extra.flat(),
    ];
    const names: string[] = [];
    for (const mod of mods) {
      const name = basename(mod);
      if (names.includes(name)) continue;
      copyFileSync(mod, join(root, 'mods', name));
      names.push(name);
    }
    for (const f of opts.files ?? []) {
      if (!f.path.startsWith('/')) throw new Error(`guest file path must be absolute: ${f.path}`);
      const p = join(root, f.path);
      mkdirSync(dirname(p), { recursive: true });
      if (f.source !== undefined) copyFileSync(f.source, p);
      else writeFileSync(p, f.data ?? '');
      chmodSync(p, f.mode ?? 0o755);
    }
    writeFileSync(join(root, 'payload.sh'), `${opts.script}\n`, { mode: 0o755 });
    writeFileSync(join(root, 'init'), initScript(opts, names), { mode: 0o755 });
    await run('sh', ['-c', `find . | cpio -o -H newc --quiet | gzip -1 > ${shellQuote(outFile)}`], {
      cwd: root,
    });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------------------------------------------
// Booting

export interface BootOptions extends Omit<InitramfsOptions, 'kernel'> {
  /** A kernel from the manifest, or its name ('debian' | 'iommufd'). */
  kernel: GuestKernel | string;
  /** `vfiotest=<mode>` on the kernel command line; the payload sees it as $MODE. */
  mode?: string;
  /** Extra kernel command-line words. */
  append?: string[];
  /** Extra `-device` values (after intel-iommu), e.g. 'edu,dma_mask=0xffffffff'. */
  devices?: string[];
  /** Extra `-object` values. */
  objects?: string[];
  /** Any other QEMU arguments. */
  qemuArgs?: string[];
  /**
   * Deterministic guest time (`-icount shift=0,sleep=off`, single-threaded TCG): every guest instruction takes
   * 1 ns of guest time whatever the host's load, so timings in the guest compare instruction counts (benches).
   */
  icount?: boolean;
  /** The vIOMMU `-device` value, or false for none. Default 'intel-iommu,intremap=on,caching-mode=on'. */
  iommu?: string | false;
  /** Guest RAM in MiB: default 1024, 2048 with hostRoot. */
  memoryMiB?: number;
  /** vCPUs, default 2. */
  smp?: number;
  /** Hard limit for the whole boot, default 180 s. */
  timeoutMs?: number;
  /** Drop `quiet` from the kernel command line. */
  verbose?: boolean;
  /** Echo the console to stderr as it arrives (also with env VFIO_GUEST_ECHO=1). */
  echo?: boolean;
}

export interface BootResult {
  /** The whole serial console, \r removed. */
  console: string;
  /** Payload output (between the BEGIN and END markers; up to the end of the console when END never came). */
  output: string;
  /** The payload's exit status; null when it did not finish. */
  exitCode: number | null;
  /** QEMU's exit (stderr, timeout...). */
  qemu: QemuExit;
  /** Guest uptime (s) when /init started and when the payload ended; wall time of the whole boot. */
  timings: { initUptime: number | null; endUptime: number | null; wallMs: number };
  /** The QEMU command line used. */
  command: string[];
}

/** Null when guests can boot with `kernel` (QEMU, manifest, kernel present), else the reason. */
export function guestUnavailableReason(kernel = 'debian'): string | null {
  try {
    findQemu();
  } catch (e) {
    return (e as Error).message;
  }
  const m = tryReadGuestManifest();
  if (!m) return `${guestManifestPath()} not found: run \`bash test/setup/prepare-guest.sh\``;
  if (!guestKernel(kernel, m))
    return `kernel '${kernel}' is not in ${guestManifestPath()} (prepare-guest.sh)`;
  return null;
}

/** Boots a guest, runs the payload, and returns the console. Never rejects for guest failures: check the result. */
export async function bootGuest(opts: BootOptions): Promise<BootResult> {
  const kernel = typeof opts.kernel === 'string' ? guestKernel(opts.kernel) : opts.kernel;
  if (!kernel)
    throw new Error(`guest kernel '${String(opts.kernel)}': ${guestUnavailableReason(String(opts.kernel))}`);
  const work = mkdtempSync(join(tmpdir(), 'vfio-guest-'));
  const started = Date.now();
  try {
    const initrd = join(work, 'initrd.cpio.gz');
    await buildInitramfs({ ...opts, kernel }, initrd);
    const cmdline = ['console=ttyS0', 'panic=-1', 'intel_iommu=on'];
    if (!opts.verbose) cmdline.push('quiet');
    if (opts.mode) cmdline.push(`vfiotest=${opts.mode}`);
    cmdline.push(...(opts.append ?? []));
    const mem = opts.memoryMiB ?? (opts.hostRoot ? 2048 : 1024);
    const args = [
      ...['-accel', opts.icount ? 'tcg,thread=single' : 'tcg,thread=multi', '-cpu', 'max'],
      ...['-m', String(mem), '-smp', String(opts.smp ?? 2)],
      // Guest time counts instructions (1 ns each), not host time: figures then do not depend on host load.
      ...(opts.icount ? ['-icount', 'shift=0,sleep=off'] : []),
      ...['-machine', 'q35,kernel-irqchip=split', '-nodefaults', '-no-reboot'],
      ...['-display', 'none', '-serial', 'stdio', '-monitor', 'none'],
    ];
    const iommu = opts.iommu ?? 'intel-iommu,intremap=on,caching-mode=on';
    if (iommu) args.push('-device', iommu);
    for (const o of opts.objects ?? []) args.push('-object', o);
    for (const d of opts.devices ?? []) args.push('-device', d);
    let wrapper: string[] | undefined;
    let shareDir: string | null = null;
    if (opts.hostRoot) {
      // A read-only, non-recursive bind of / in a private mount namespace that dies with QEMU: no stale mounts,
      // nothing visible to the rest of the machine, and /proc, /sys, /dev of the host are not shared.
      shareDir = join(work, 'hostroot');
      mkdirSync(shareDir);
      wrapper = [
        'unshare',
        '-m',
        '--propagation',
        'private',
        '--',
        'sh',
        '-c',
        'mount --bind / "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
        shareDir,
      ];
      args.push('-virtfs', `local,path=${shareDir},mount_tag=hostroot,security_model=none,readonly=on`);
    }
    args.push(...(opts.qemuArgs ?? []));
    args.push('-kernel', kernel.kernel, '-initrd', initrd, '-append', cmdline.join(' '));
    const echo = opts.echo || process.env.VFIO_GUEST_ECHO === '1';
    const q = spawnQemu({
      args,
      wrapper,
      timeoutMs: opts.timeoutMs ?? 180_000,
      onStdout: echo ? (d) => process.stderr.write(d) : undefined,
      onStderr: echo ? (d) => process.stderr.write(d) : undefined,
    });
    const exit = await q.exited;
    return {
      ...parseConsole(exit.stdout),
      qemu: exit,
      timings: { ...uptimes(exit.stdout), wallMs: Date.now() - started },
      command: q.command,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function parseConsole(raw: string): { console: string; output: string; exitCode: number | null } {
  const text = raw.replace(/\r/g, '');
  const begin = text.indexOf(`${GUEST_MARK} BEGIN`);
  const end = /^@@vfio-guest: END rc=(\d+)/m.exec(text);
  let output = '';
  if (begin >= 0) {
    const from = text.indexOf('\n', begin) + 1;
    output = text.slice(from, end && end.index > from ? end.index : text.length);
  }
  return { console: text, output, exitCode: end ? Number(end[1]) : null };
}

function uptimes(raw: string): { initUptime: number | null; endUptime: number | null } {
  const init = /@@vfio-guest: init uptime=([\d.]+)/.exec(raw);
  const end = /@@vfio-guest: END rc=\d+ uptime=([\d.]+)/.exec(raw);
  return { initUptime: init ? Number(init[1]) : null, endUptime: end ? Number(end[1]) : null };
}

/** The guest console and QEMU's stderr (its last `stderrTail` characters, when given), for assertion messages. */
export function bootContext(r: BootResult, stderrTail?: number): string {
  const stderr = stderrTail === undefined ? r.qemu.stderr : r.qemu.stderr.slice(-stderrTail);
  return `\n--- guest console ---\n${r.console}\n--- qemu stderr ---\n${stderr}`;
}

export interface GuestSummaryExpectation {
  /** The program's name, for messages. */
  program: string;
  /** The fewest checks that must have run. */
  minChecks: number;
  /** The summary line carries `, N skipped` (which must then be 0). */
  withSkipped?: boolean;
  stderrTail?: number;
}

/**
 * Asserts that a guest test program printed its summary line `N passed, 0 failed` (`, 0 skipped` with
 * `withSkipped`) with N >= minChecks, and that the payload and QEMU exited cleanly. Returns N.
 */
export function assertGuestPassed(r: BootResult, e: GuestSummaryExpectation): number {
  const context = bootContext(r, e.stderrTail);
  const re = e.withSkipped ? /^(\d+) passed, (\d+) failed, (\d+) skipped$/m : /^(\d+) passed, (\d+) failed$/m;
  const summary = re.exec(r.output);
  assert.ok(summary, `no summary line from ${e.program}${context}`);
  assert.is(Number(summary[2]), 0, `${e.program} reported failures${context}`);
  if (e.withSkipped) assert.is(Number(summary[3]), 0, `${e.program} skipped checks${context}`);
  const n = Number(summary[1]);
  assert.ok(n >= e.minChecks, `too few checks ran (${n} < ${e.minChecks})${context}`);
  assert.is(r.exitCode, 0, `payload exit status${context}`);
  assert.ok(r.qemu.code === 0 && !r.qemu.timedOut, `QEMU exit ${r.qemu.code}/${r.qemu.signal}${context}`);
  return n;
}
