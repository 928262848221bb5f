// `vfio-user-conformance`: hold any vfio-user server to the spec.
//
//   vfio-user-conformance --socket-path PATH [--json FILE] [--only GROUP|ID[,...]] [--spawn 'CMD ...']
//                         [--profile spec|lvu|qemu] [--scratch REGION:OFFSET[:WIDTH]] [--timeout MS] [--report]
//                         [--verbose] [--list]
//
// Exit code 0 iff no case failed (WARN does not fail a run).
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { basisKind, PROFILES, type Profile } from './case.js';
import { allGroups } from './cases/index.js';
import { parseScratch } from './devices.js';
import { renderReport } from './report.js';
import { runSuite } from './runner.js';

const usage = `usage: vfio-user-conformance --socket-path PATH [options]

  --socket-path PATH   the server's UNIX socket (with --spawn: where the server is told to listen;
                       default a temporary path)
  --spawn 'CMD ...'    start the server with CMD ({socket} is replaced by the socket path, otherwise
                       --socket-path PATH is appended); restart it when a case ends it; check crashes,
                       fd leaks, SIGTERM, stale sockets, --fd
  --only LIST          comma-separated groups (VER,HDR,INF,RGN,IOF,IRQI,IRQS,RW,CFG,MAP,UNM,SDMA,RST,WMU,
                       FEA,MIG,LIFE,ROB) or case ids (MAP-10)
  --profile P          how deviations are graded (the facts stay the same): FAIL for a spec "must" or
                       what breaks QEMU, WARN for "should"/recommendations and open choices.
                       spec (default); lvu: libvfio-user's documented choices are accepted, its errnos
                       held (WARN); qemu: a "must" QEMU 11.1 tolerates or never exercises is a WARN
  --report             after the run, a readable report per group: what QEMU would not accept, what
                       deviates from the spec but works with QEMU, what is optional and missing
  --scratch R:OFF[:W]  a register that reads back what is written, for devices the suite does not know
  --json FILE          write a machine-readable report
  --timeout MS         per-reply timeout (default 5000, QEMU's)
  --list               list the cases and exit
  --verbose            print what discovery found
`;

export async function main(argv: string[]): Promise<number> {
  let args: ReturnType<typeof parse>;
  try {
    args = parse(argv);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${usage}`);
    return 2;
  }
  const v = args.values;
  if (v.help) {
    process.stdout.write(usage);
    return 0;
  }
  if (v.list) {
    for (const g of allGroups) {
      for (const c of g.cases) {
        console.log(`${c.id.padEnd(8)}  ${c.title}  [${c.basis}: ${basisKind(c.id, c.basis)}]`);
        if (v.verbose && c.rule) console.log(`          ${c.rule.level}: ${c.rule.cite}`);
      }
    }
    const n = allGroups.reduce((a, g) => a + g.cases.length, 0);
    console.log(`${n} cases in ${allGroups.length} groups`);
    return 0;
  }
  const profile = (v.profile ?? 'spec') as Profile;
  if (!PROFILES.includes(profile)) {
    process.stderr.write(`--profile must be one of ${PROFILES.join(', ')}\n${usage}`);
    return 2;
  }
  let socketPath = v['socket-path'];
  if (!socketPath) {
    if (!v.spawn) {
      process.stderr.write(`--socket-path is required (or --spawn)\n${usage}`);
      return 2;
    }
    socketPath = join(tmpdir(), `vfio-user-conformance-${process.pid}.sock`);
  }
  socketPath = resolve(socketPath);
  if (!v.spawn && !existsSync(socketPath)) {
    process.stderr.write(`no socket at ${socketPath} (start the server, or use --spawn)\n`);
    return 2;
  }
  const report = await runSuite({
    socketPath,
    spawn: v.spawn ?? null,
    only: v.only ? v.only.split(',') : null,
    jsonFile: v.json ?? null,
    profile,
    timeoutMs: v.timeout ? Number(v.timeout) : 5000,
    verbose: v.verbose ?? false,
    scratch: v.scratch ? parseScratch(v.scratch) : null,
  });
  if (v.report) process.stdout.write(renderReport(report));
  return report.summary.failed === 0 && !report.setupError ? 0 : 1;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    options: {
      'socket-path': { type: 'string' },
      spawn: { type: 'string' },
      only: { type: 'string' },
      profile: { type: 'string' },
      scratch: { type: 'string' },
      json: { type: 'string' },
      timeout: { type: 'string' },
      list: { type: 'boolean' },
      verbose: { type: 'boolean' },
      report: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`vfio-user-conformance: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 2;
  },
);
