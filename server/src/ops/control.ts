// The control socket (`--control-socket PATH`): a UNIX stream socket, created 0600 like the main one (only its
// owner may connect), served by node:net. Each request is one line: JSON `{"command":"stats","args":[]}` or
// plain words (`stats`, `log-level debug`); each answer is one JSON line `{"ok":true,"result":...}` or
// `{"ok":false,"error":"..."}`. `vfio-user-ctl PATH COMMAND [ARGS]` is the client.
//
// Commands live in one table (`ControlServer.commands`): a feature adds its own with register(name, command).
//
// Budgets: a request line is at most 64 KiB (longer: an error and the connection closes), at most 16 control
// connections at once, a connection idle for 5 minutes is closed; commands run one at a time per connection.

import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type pino from 'pino';
import * as native from 'vfio-user-native';
import type { VfioUserDevice } from '../device.js';
import { LOG_LEVELS, type LogLevel } from '../log.js';
import type { VfioUserServer } from '../server.js';
import { collectCounters, migrationStatus } from './counters.js';
import type { Tracing } from './tracing.js';

export const MAX_LINE = 64 * 1024;
export const MAX_CONNECTIONS = 16;
export const IDLE_TIMEOUT_MS = 5 * 60_000;

/** What a control-socket command can reach: the server, its device, the logger and the tracing switch. */
export interface ControlContext {
  server: VfioUserServer;
  device: VfioUserDevice;
  deviceName: string;
  /** The root logger: `log-level` changes its level (children without their own level follow). */
  log: pino.Logger;
  tracing: Tracing;
}

/** One command of the control socket (`vfio-user-ctl PATH <name>`): its usage line, help text and handler. */
export interface ControlCommand {
  /** `log-level LEVEL` */
  usage: string;
  help: string;
  run(args: string[], ctx: ControlContext): unknown;
}

/** A refused request: its message is the answer's `error`. */
export class ControlError extends Error {
  override name = 'ControlError';
}

const hex = (v: bigint) => `0x${v.toString(16)}`;

/** The built-in commands. */
export function builtinCommands(): Map<string, ControlCommand> {
  const m = new Map<string, ControlCommand>();
  m.set('help', {
    usage: 'help',
    help: 'this list',
    run: () => undefined, // answered by ControlServer (it knows the whole table)
  });
  m.set('stats', {
    usage: 'stats',
    help: 'every counter: messages and errors, DMA, host IOMMU, IRQs, migration, the device',
    run: (_a, c) => collectCounters(c.server, c.device),
  });
  m.set('dma', {
    usage: 'dma',
    help: 'the live DMA map table (IOVA order)',
    run: (_a, c) => {
      const regions = c.server.dma.regions();
      return {
        count: regions.length,
        regions: regions.map((r) => ({
          iova: hex(r.iova),
          size: hex(r.size),
          prot: `${r.readable ? 'r' : '-'}${r.writable ? 'w' : '-'}`,
          access: r.access,
          ...(r.file && { fileOffset: hex(r.fileOffset), file: r.fileId }),
        })),
      };
    },
  });
  m.set('irqs', {
    usage: 'irqs',
    help: 'interrupt counters and every vector the client set up (eventfd, masked, pending)',
    run: (_a, c) => ({ stats: c.server.irq.stats, vectors: c.server.irq.snapshot() }),
  });
  m.set('session', {
    usage: 'session',
    help: 'the client being served (session id, peer pid/uid, since), waiting connections, capabilities',
    run: (_a, c) => {
      const s = c.server.session;
      return {
        device: c.deviceName,
        socket: c.server.socketPath,
        client: s ? { ...s, since: new Date(s.since).toISOString() } : null,
        waiting: c.server.clients.waiting,
        connections: c.server.stats.connections,
        capabilities: c.server.capabilities,
      };
    },
  });
  m.set('log-level', {
    usage: 'log-level [LEVEL]',
    help: `show or change the log level (${LOG_LEVELS.join(', ')})`,
    run: ([level], c) => {
      const previous = c.log.level;
      if (level === undefined) return { level: previous };
      if (!(LOG_LEVELS as readonly string[]).includes(level))
        throw new ControlError(`unknown level '${level}' (one of ${LOG_LEVELS.join(', ')})`);
      c.log.level = level as LogLevel;
      c.server.observers.changed(); // trace logging sees every message from now on (direct reads stop)
      c.log.info({ previous, level }, 'log level changed');
      return { previous, level };
    },
  });
  m.set('trace', {
    usage: 'trace start [FILE] | trace stop | trace',
    help: 'log every message decoded at info, or record the raw stream to FILE; stop; show the state',
    run: async ([verb, file], c) => {
      if (verb === undefined || verb === 'status') return c.tracing.state;
      if (verb === 'stop') {
        await c.tracing.stop();
        return c.tracing.state;
      }
      if (verb !== 'start') throw new ControlError(`trace: expected start, stop or status, not '${verb}'`);
      if (file !== undefined) {
        if (!file.startsWith('/')) throw new ControlError('trace start FILE: FILE must be an absolute path');
        await c.tracing.startRecord(file);
      } else c.tracing.startLog();
      return c.tracing.state;
    },
  });
  m.set('migration', {
    usage: 'migration',
    help: 'the device migration state and stream byte counts',
    run: (_a, c) => migrationStatus(c.device) ?? { supported: false },
  });
  return m;
}

/** Parses one request line: JSON `{"command", "args"}` or whitespace-separated words. */
export function parseRequest(line: string): { command: string; args: string[] } {
  const text = line.trim();
  if (text.startsWith('{')) {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      throw new ControlError('request is not valid JSON');
    }
    const o = v as { command?: unknown; args?: unknown };
    if (typeof o.command !== 'string') throw new ControlError('request needs a "command" string');
    const args = o.args ?? [];
    if (!Array.isArray(args) || !args.every((a) => typeof a === 'string'))
      throw new ControlError('"args" must be an array of strings');
    return { command: o.command, args: args as string[] };
  }
  const [command = '', ...args] = text.split(/\s+/);
  return { command, args };
}

/** JSON that tolerates bigints (as hex strings) and typed arrays (as lengths). */
function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) =>
    typeof x === 'bigint' ? hex(x) : x instanceof Uint8Array ? `<${x.length} bytes>` : x,
  );
}

/**
 * The control socket (`--control-socket PATH`): a 0600 UNIX socket, one request and one JSON answer per line, with
 * budgets on line length, connections and idle time (docs/operations.md).
 */
export class ControlServer {
  readonly commands = builtinCommands();
  private net: Server | undefined;
  private path: string | undefined;
  private ino: bigint | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly ctx: ControlContext) {}

  /** Adds (or replaces) a command. */
  register(name: string, command: ControlCommand): void {
    this.commands.set(name, command);
  }

  /** Runs one request line and returns the answer object (also used by tests and SIGUSR-style callers). */
  async handle(line: string): Promise<{ ok: true; result: unknown } | { ok: false; error: string }> {
    try {
      const { command, args } = parseRequest(line);
      if (!command) throw new ControlError('empty request');
      if (command === 'help') {
        return {
          ok: true,
          result: [...this.commands.entries()].map(([name, c]) => ({ name, usage: c.usage, help: c.help })),
        };
      }
      const c = this.commands.get(command);
      if (!c) throw new ControlError(`unknown command '${command}' (try help)`);
      return { ok: true, result: (await c.run(args, this.ctx)) ?? null };
    } catch (err) {
      if (!(err instanceof ControlError)) this.ctx.log.warn({ err, line }, 'control command failed');
      return { ok: false, error: (err as Error).message };
    }
  }

  /**
   * Listens on `path`: the socket is created by the addon (0600 whatever the umask; a stale socket file is
   * replaced, a live one is EADDRINUSE) and served by node:net.
   */
  async listen(path: string): Promise<void> {
    const l = native.Listener.listen(path, { mode: 0o600, backlog: MAX_CONNECTIONS });
    let fd: number;
    try {
      fd = native.dupFd(l.fd);
    } finally {
      l.close({ unlink: false });
    }
    this.path = path;
    this.ino = lstatSync(path, { bigint: true }).ino;
    chmodSync(path, 0o600);
    const server = createServer({ allowHalfOpen: true }, (s) => this.onConnection(s));
    server.maxConnections = MAX_CONNECTIONS;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.ctx.log.error({ err }, 'control socket error'));
    this.net = server;
  }

  private onConnection(s: Socket): void {
    this.sockets.add(s);
    s.setTimeout(IDLE_TIMEOUT_MS, () => s.destroy());
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => s.destroy());
    let buf = '';
    let busy: Promise<void> = Promise.resolve();
    s.setEncoding('utf8');
    s.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_LINE && !buf.slice(0, MAX_LINE + 1).includes('\n')) {
        s.end(`${toJson({ ok: false, error: `request longer than ${MAX_LINE} bytes` })}\n`);
        s.destroy();
        return;
      }
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) {
          busy = busy.then(async () => {
            const answer = await this.handle(line);
            if (!s.destroyed) s.write(`${toJson(answer)}\n`);
          });
        }
        nl = buf.indexOf('\n');
      }
    });
    // A request without a final newline is answered at end of input.
    s.on('end', () => {
      const line = buf;
      buf = '';
      busy = busy.then(async () => {
        if (line.trim()) {
          const answer = await this.handle(line);
          if (!s.destroyed) s.write(`${toJson(answer)}\n`);
        }
        s.end();
      });
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const net = this.net;
    this.net = undefined;
    if (net) await new Promise<void>((resolve) => net.close(() => resolve()));
    if (this.path) {
      try {
        const st = lstatSync(this.path, { bigint: true });
        if (st.isSocket() && st.ino === this.ino) unlinkSync(this.path);
      } catch {
        // already gone
      }
    }
  }
}
