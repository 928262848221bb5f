// Turns recorded or proxied messages into the lines `vfio-user-trace` prints (one per message, formatted by the
// protocol package's dissector), with the filters: --command NAME[,NAME], --errors, --slow MS. With --errors or
// --slow a request is only known to qualify when its reply arrives, so the pair is printed then (request line,
// then reply line).
import {
  formatTraceLine,
  TraceFlags,
  TraceKind,
  type TraceLine,
  TracePairer,
  type TraceRecord,
} from 'vfio-user-protocol';

export interface TraceFilters {
  /** Command names (upper case) to keep; empty = all. */
  commands?: readonly string[];
  /** Only failed requests (error replies) and their requests. */
  errors?: boolean;
  /** Only requests answered after at least this many ms, and their replies. */
  slowMs?: number;
}

export class TracePrinter {
  private readonly pairer = new TracePairer();
  private readonly commands: Set<string> | undefined;
  /** Lines printed / messages seen (tests, the summary). */
  printed = 0;
  messages = 0;

  constructor(
    private readonly out: (line: string) => void,
    private readonly filters: TraceFilters = {},
  ) {
    this.commands = filters.commands?.length
      ? new Set(filters.commands.map((c) => c.toUpperCase()))
      : undefined;
  }

  private emit(text: string): void {
    this.printed++;
    this.out(text);
  }

  private wanted(line: TraceLine): boolean {
    if (this.commands && !this.commands.has(line.summary.name)) return false;
    const deferred = this.filters.errors || this.filters.slowMs !== undefined;
    if (!deferred) return true;
    if (line.summary.kind === 'command') return false; // printed with its reply, if that qualifies
    if (this.filters.errors && line.summary.kind !== 'error') return false;
    if (this.filters.slowMs !== undefined) {
      if (line.latencyNs === undefined) return false;
      if (Number(line.latencyNs) / 1e6 < this.filters.slowMs) return false;
    }
    return true;
  }

  /** One message. */
  message(timeNs: bigint, fromServer: boolean, twin: boolean, bytes: Uint8Array, fds: number): void {
    this.messages++;
    const line = this.pairer.feed(timeNs, fromServer, twin, bytes, fds);
    if (!line) {
      this.emit(`${(Number(timeNs) / 1e9).toFixed(6).padStart(12)} <${bytes.length}-byte fragment>`);
      return;
    }
    if (!this.wanted(line)) return;
    const deferred = this.filters.errors || this.filters.slowMs !== undefined;
    if (deferred && line.request) this.emit(formatTraceLine(line.request));
    this.emit(formatTraceLine(line));
  }

  /** A session marker or a note. */
  note(timeNs: bigint, text: string): void {
    this.emit(`${(Number(timeNs) / 1e9).toFixed(6).padStart(12)} --- ${text}`);
  }

  /** One record of a trace file. */
  record(r: TraceRecord): void {
    switch (r.kind) {
      case TraceKind.MESSAGE:
        this.message(
          r.timeNs,
          (r.flags & TraceFlags.FROM_SERVER) !== 0,
          (r.flags & TraceFlags.TWIN) !== 0,
          r.body,
          r.fds,
        );
        return;
      case TraceKind.SESSION_START:
        this.pairer.reset();
        this.note(r.timeNs, `session start ${jsonText(r.body)}`);
        return;
      case TraceKind.SESSION_END:
        this.note(r.timeNs, `session end ${jsonText(r.body)}`);
        return;
      case TraceKind.DROPPED:
        this.note(r.timeNs, `recorder dropped ${jsonText(r.body)}`);
        return;
      default:
        this.note(r.timeNs, `record of unknown kind ${r.kind} (${r.body.length} bytes)`);
    }
  }
}

function jsonText(b: Uint8Array): string {
  return new TextDecoder().decode(b.subarray(0, 1024));
}
