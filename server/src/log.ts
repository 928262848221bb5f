// Logging: pino, JSON lines on stderr (fd 1 stays the program's own output, as the vfio-user backend
// conventions ask); when stderr is a terminal, the same records are printed as short readable lines instead.
// A tiny formatter is enough here, so we do not pull in pino-pretty and its dependency tree.
import pino, { type Logger } from 'pino';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO ',
  40: 'WARN ',
  50: 'ERROR',
  60: 'FATAL',
};
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'name']);

/** Turns one pino JSON line into `HH:MM:SS.mmm LEVEL [name] msg key=value ...`. */
export function formatRecord(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const t = new Date(typeof rec.time === 'number' ? rec.time : Date.now());
  const hh = t.toISOString().slice(11, 23);
  const level = LEVEL_NAMES[rec.level as number] ?? String(rec.level);
  const name = rec.name ? ` [${rec.name}]` : '';
  const extras: string[] = [];
  for (const [k, v] of Object.entries(rec)) {
    if (SKIP.has(k)) continue;
    extras.push(`${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  return `${hh} ${level}${name} ${rec.msg ?? ''}${extras.length ? ` ${extras.join(' ')}` : ''}\n`;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Force readable (true) or JSON (false) output; default: readable iff stderr is a TTY. */
  pretty?: boolean;
  name?: string;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const pretty = opts.pretty ?? Boolean(process.stderr.isTTY);
  const base = { level: opts.level ?? 'info', name: opts.name ?? 'vfio-user-server' };
  if (!pretty) return pino(base, pino.destination({ fd: 2, sync: true }));
  const stream = {
    write(line: string) {
      process.stderr.write(formatRecord(line));
    },
  };
  return pino(base, stream);
}
