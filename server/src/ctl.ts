// `vfio-user-ctl PATH COMMAND [ARGS...]`: one request to a server's control socket (--control-socket PATH),
// printing the answer as indented JSON on stdout. Exit status 0 when the server answered ok, 1 when it refused
// the request or could not be reached, 2 on a bad command line. `vfio-user-ctl PATH help` lists the commands.
import { connect } from 'node:net';

const USAGE = `Usage: vfio-user-ctl CONTROL_SOCKET COMMAND [ARGS...]

  Commands (the server's 'help' lists them with their arguments):
    stats | dma | irqs | session | migration | log-level [LEVEL] | trace [start [FILE] | stop] | help

  Options:
    --json    print the answer as one JSON line (default: indented)
    --timeout MS   give up after MS milliseconds (default 10000)
`;

async function main(argv: string[]): Promise<number> {
  let json = false;
  let timeoutMs = 10_000;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') json = true;
    else if (a === '--timeout') {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v <= 0) {
        process.stderr.write(`vfio-user-ctl: --timeout takes milliseconds\n\n${USAGE}`);
        return 2;
      }
      timeoutMs = v;
    } else if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE);
      return 0;
    } else rest.push(a);
  }
  const [path, command, ...args] = rest;
  if (!path || !command) {
    process.stderr.write(`vfio-user-ctl: a control socket path and a command are required\n\n${USAGE}`);
    return 2;
  }
  const answer = await new Promise<string>((resolve, reject) => {
    const s = connect(path);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(`${JSON.stringify({ command, args })}\n`));
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        s.end();
        resolve(buf.slice(0, nl));
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.on('close', () => {
      clearTimeout(timer);
      reject(new Error('the server closed the connection without answering'));
    });
  }).catch((err: Error) => {
    process.stderr.write(`vfio-user-ctl: ${path}: ${err.message}\n`);
    return undefined;
  });
  if (answer === undefined) return 1;
  let v: { ok?: boolean; result?: unknown; error?: string };
  try {
    v = JSON.parse(answer) as typeof v;
  } catch {
    process.stderr.write(`vfio-user-ctl: not a JSON answer: ${answer.slice(0, 200)}\n`);
    return 1;
  }
  if (!v.ok) {
    process.stderr.write(`vfio-user-ctl: ${command}: ${v.error}\n`);
    return 1;
  }
  process.stdout.write(`${json ? JSON.stringify(v.result) : JSON.stringify(v.result, null, 2)}\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vfio-user-ctl: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
