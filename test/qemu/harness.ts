// Shared pieces of the end-to-end tests with real QEMU (test/qemu and test/vm/qemu-*): our edu served in-process
// on a socket the test owns (so assertions can read the server's counters and the device's state directly), a
// recorder of every DMA region the client maps and unmaps, the edu register map (from test/lib), and stage timings.
//
// VFIO_USER_TEST_LOG=debug (or any pino level) prints the in-process server's log on stderr.

import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import pino from 'pino';
import {
  createEdu,
  type DmaAccessKind,
  type DmaRegion,
  type EduDevice,
  type ServerOptions,
  VfioUserServer,
} from 'vfio-user-server';

import { projectRoot } from '../lib/guest.js';
import { poll } from '../lib/wait.js';

const BIN = join(projectRoot, 'server', 'bin', 'vfio-user-server.js');

// The edu register map lives in test/lib (shared with test/integration); re-exported for the qemu/vm tests.
export { Edu } from '../lib/edu-regs.js';

export interface DmaEvent {
  kind: 'map' | 'unmap';
  iova: bigint;
  size: bigint;
  prot: number;
  access: DmaAccessKind;
  fileOffset: bigint;
}

export interface EduServer {
  server: VfioUserServer;
  edu: EduDevice;
  path: string;
  /** Every region the client mapped and unmapped, in order (recorded through the address space's listener API). */
  dma: DmaEvent[];
  close(): Promise<void>;
}

function testLogger(): pino.Logger | undefined {
  const level = process.env.VFIO_USER_TEST_LOG;
  if (!level) return undefined;
  return pino({ level, name: 'server' }, pino.destination({ fd: 2, sync: true }));
}

/** Starts our edu on `path` in this process. */
export async function startEduServer(
  path: string,
  opts: Omit<ServerOptions, 'socketPath' | 'fd' | 'device'> = {},
): Promise<EduServer> {
  const logger = opts.logger ?? testLogger();
  const edu = createEdu({ log: logger });
  const server = new VfioUserServer({ ...opts, logger, socketPath: path, device: edu });
  const dma: DmaEvent[] = [];
  const record = (kind: DmaEvent['kind'], r: DmaRegion) =>
    dma.push({ kind, iova: r.iova, size: r.size, prot: r.prot, access: r.access, fileOffset: r.fileOffset });
  await server.dma.subscribe(
    {
      regionAdded: (r) => {
        record('map', r);
      },
      regionRemoved: (r) => {
        record('unmap', r);
      },
    },
    { replay: false },
  );
  await server.start();
  return { server, edu, path, dma, close: () => server.close() };
}

/** Stage timings of one test, printed as one line (and kept for the report). */
export class Stages {
  private last = performance.now();
  private readonly t0 = this.last;
  readonly ms: Record<string, number> = {};

  constructor(readonly name: string) {}

  /** Closes the current stage under `label`. */
  mark(label: string): void {
    const now = performance.now();
    this.ms[label] = Math.round(now - this.last);
    this.last = now;
  }

  get totalMs(): number {
    return Math.round(performance.now() - this.t0);
  }

  print(): void {
    const parts = Object.entries(this.ms).map(([k, v]) => `${k} ${v} ms`);
    console.log(`  [timing] ${this.name}: ${parts.join(', ')}; total ${this.totalMs} ms`);
  }
}

/** Hex for messages. */
export const hex = (v: number | bigint) => `0x${v.toString(16)}`;

/** The CLI (`vfio-user-server`) as a child process on `socket`, its JSON log records parsed as they arrive. */
export class ServerProcess {
  readonly child: ChildProcess;
  readonly records: Record<string, unknown>[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private partial = '';

  constructor(socket: string) {
    this.child = spawn(process.execPath, [BIN, '--socket-path', socket, '--log-format', 'json'], {
      cwd: projectRoot,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      this.stderr += d;
      const lines = (this.partial + d).split('\n');
      this.partial = lines.pop() ?? '';
      for (const l of lines) {
        try {
          this.records.push(JSON.parse(l) as Record<string, unknown>);
        } catch {
          // not a log record
        }
      }
    });
    this.exited = new Promise((resolve) =>
      this.child.on('close', (code, signal) => resolve({ code, signal })),
    );
  }

  all(msg: string): Record<string, unknown>[] {
    return this.records.filter((r) => r.msg === msg);
  }

  has(msg: string): boolean {
    return this.records.some((r) => r.msg === msg);
  }

  async waitFor(msg: string, timeoutMs = 10_000): Promise<void> {
    if (!(await poll(() => this.has(msg) || this.child.exitCode !== null, timeoutMs)) || !this.has(msg)) {
      throw new Error(`server did not log '${msg}':\n${this.stderr}`);
    }
  }
}
