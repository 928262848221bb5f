// `vfio-user-trace`: decodes vfio-user traffic into one line per message.
//   vfio-user-trace FILE [filters]                       a recording (vfio-user-server --record FILE)
//   vfio-user-trace --listen PATH --server PATH [--record FILE] [filters]
//                                                        live: proxy between a VMM (connecting to --listen) and a
//                                                        server (listening on --server), printing as it goes
// Filters: --command NAME[,NAME...], --errors, --slow MS. The format is in docs/wire-trace.md.
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { parseArgs } from 'node:util';
import {
  encodeTraceFileHeader,
  encodeTraceRecordHeader,
  TraceFlags,
  TraceKind,
  TraceParser,
} from 'vfio-user-protocol';
import { type TraceFilters, TracePrinter } from './printer.js';
import { TraceProxy } from './proxy.js';

const USAGE = `Usage: vfio-user-trace FILE [filters]
       vfio-user-trace --listen PATH --server PATH [--record FILE] [filters]

  FILE                 a recording made with vfio-user-server --record FILE (or the control socket's trace start)
  --listen PATH        live mode: listen on PATH (give it to QEMU) and forward to the server at --server PATH,
                       passing every message and its fds through unchanged
  --record FILE        live mode: also record the traffic to FILE (same format as the server's --record)

  Filters:
  --command NAME[,NAME]  only these commands (requests and replies), e.g. DMA_MAP,DMA_UNMAP
  --errors               only failed requests (the request and its error reply)
  --slow MS              only requests answered after MS milliseconds or more (request and reply)

Each line: seconds since the start, direction (C>S client to server, S>C server to client), message id,
command, decoded fields (flags by name); replies add ok or the errno, and the latency.
`;

function usageError(msg: string): never {
  process.stderr.write(`vfio-user-trace: ${msg}\n\n${USAGE}`);
  process.exit(2);
}

interface Options {
  file?: string;
  listen?: string;
  server?: string;
  record?: string;
  filters: TraceFilters;
}

function parse(argv: string[]): Options | undefined {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        listen: { type: 'string' },
        server: { type: 'string' },
        record: { type: 'string' },
        command: { type: 'string' },
        errors: { type: 'boolean', default: false },
        slow: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (e) {
    usageError((e as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return undefined;
  }
  const filters: TraceFilters = { errors: values.errors as boolean };
  if (values.command !== undefined) {
    filters.commands = (values.command as string).split(',').filter(Boolean);
    if (!filters.commands.length) usageError('--command needs a command name');
  }
  if (values.slow !== undefined) {
    const ms = Number(values.slow);
    if (!(ms >= 0)) usageError(`--slow takes milliseconds, not '${values.slow}'`);
    filters.slowMs = ms;
  }
  const o: Options = {
    listen: values.listen as string | undefined,
    server: values.server as string | undefined,
    record: values.record as string | undefined,
    filters,
  };
  if (o.listen !== undefined || o.server !== undefined) {
    if (!o.listen || !o.server) usageError('live mode needs both --listen PATH and --server PATH');
    if (positionals.length) usageError('a FILE and live mode are exclusive');
    return o;
  }
  if (o.record) usageError('--record is for live mode');
  if (positionals.length !== 1) usageError('expected one trace FILE (or --listen/--server)');
  o.file = positionals[0];
  return o;
}

const print = (line: string) => {
  process.stdout.write(`${line}\n`);
};

async function decodeFile(file: string, filters: TraceFilters): Promise<number> {
  const printer = new TracePrinter(print, filters);
  const parser = new TraceParser();
  try {
    for await (const chunk of createReadStream(file)) {
      for (const r of parser.push(chunk as Buffer)) printer.record(r);
    }
    parser.end();
  } catch (err) {
    process.stderr.write(`vfio-user-trace: ${file}: ${(err as Error).message}\n`);
    return 1;
  }
  return 0;
}

/** A recording of the proxied traffic, in the server's format. */
class ProxyRecorder {
  private readonly t0 = process.hrtime.bigint();
  constructor(private readonly out: WriteStream) {
    out.write(encodeTraceFileHeader(BigInt(Date.now()) * 1_000_000n));
  }
  now(): bigint {
    return process.hrtime.bigint() - this.t0;
  }
  record(kind: number, flags: number, fds: number, body: Uint8Array, t: bigint): void {
    this.out.write(encodeTraceRecordHeader(kind, flags, fds, body.length, t));
    this.out.write(Buffer.from(body));
  }
  close(): Promise<void> {
    return new Promise((resolve) => this.out.end(() => resolve()));
  }
}

async function live(o: Options): Promise<number> {
  const printer = new TracePrinter(print, o.filters);
  const rec = o.record ? new ProxyRecorder(createWriteStream(o.record, { mode: 0o600 })) : undefined;
  const t0 = process.hrtime.bigint();
  const now = () => rec?.now() ?? process.hrtime.bigint() - t0;
  let session = 0;
  const proxy = new TraceProxy(o.listen!, o.server!, {
    message(fromServer, bytes, fds) {
      const t = now();
      rec?.record(TraceKind.MESSAGE, fromServer ? TraceFlags.FROM_SERVER : 0, fds, bytes, t);
      printer.message(t, fromServer, false, bytes, fds);
    },
    note(text) {
      const t = now();
      if (text.includes(' connected')) {
        session++;
        rec?.record(
          TraceKind.SESSION_START,
          0,
          0,
          new TextEncoder().encode(JSON.stringify({ session, text })),
          t,
        );
      } else if (text.includes(' closed')) {
        rec?.record(
          TraceKind.SESSION_END,
          0,
          0,
          new TextEncoder().encode(JSON.stringify({ session, text })),
          t,
        );
      }
      printer.note(t, text);
    },
  });
  try {
    proxy.start();
  } catch (err) {
    process.stderr.write(`vfio-user-trace: --listen ${o.listen}: ${(err as Error).message}\n`);
    return 1;
  }
  process.stderr.write(`vfio-user-trace: listening on ${o.listen}, forwarding to ${o.server}\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  proxy.close();
  await rec?.close();
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const o = parse(argv);
  if (!o) return 0;
  if (o.file) return decodeFile(o.file, o.filters);
  return live(o);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    setImmediate(() => process.exit(code));
  },
  (err: unknown) => {
    process.stderr.write(`vfio-user-trace: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
