// Runs the cases against one server: discovery first, then every selected case with its liveness probe,
// process supervision, and the report. Under --spawn a server that ends is restarted and the run goes on: death
// by a signal is a crash (a must finding); an exit with a code is reported as that exit, and the case is judged
// on what the server said before it (a server may exit after a failed negotiation or when its client leaves).
import { writeFileSync } from 'node:fs';
import {
  basisKind,
  type CaseDef,
  CaseFail,
  type CaseResult,
  CaseSkip,
  Ctx,
  connectWithRetry,
  type Finding,
  type Group,
  type RunOptions,
  ServerGone,
} from './case.js';
import { allGroups } from './cases/index.js';
import { loadNative, type NativeApi } from './native.js';
import { type DeviceProfile, describeProfile, discover } from './profile.js';
import { attachRules } from './rules.js';
import { negotiate, probeConn } from './session.js';
import { describeExit, pidAlive, Target } from './target.js';
import { breaksQemu, verdictOf, worst } from './verdict.js';

export interface SuiteOptions extends RunOptions {
  /** Command that starts the server (`{socket}` placeholder, or `--socket-path` is appended). */
  spawn: string | null;
  /** Group names or case ids to run (null = all). */
  only: string[] | null;
  jsonFile: string | null;
  /** Where lines go (default: stdout). */
  out?: (line: string) => void;
  groups?: Group[];
  native?: NativeApi;
}

export interface SuiteReport {
  tool: string;
  socketPath: string;
  profile: string;
  spawn: string | null;
  server: Record<string, unknown> | null;
  startedAt: string;
  durationMs: number;
  summary: { passed: number; warned: number; failed: number; skipped: number; total: number };
  setupError: string | null;
  restarts: number;
  cases: CaseResult[];
}

const DEFAULT_CASE_TIMEOUT = 30000;

export function selectCases(groups: Group[], only: string[] | null): { group: string; c: CaseDef }[] {
  const out: { group: string; c: CaseDef }[] = [];
  const want = only?.map((s) => s.trim().toUpperCase()).filter(Boolean) ?? null;
  for (const g of groups) {
    for (const c of g.cases) {
      if (want && !want.includes(g.name) && !want.includes(c.id)) continue;
      out.push({ group: g.name, c });
    }
  }
  return out;
}

export async function runSuite(o: SuiteOptions): Promise<SuiteReport> {
  const out = o.out ?? ((l: string) => console.log(l));
  const native = o.native ?? loadNative();
  const groups = attachRules(o.groups ?? allGroups);
  const selected = selectCases(groups, o.only);
  const target = new Target(o.socketPath, o.spawn);
  const started = Date.now();
  const results: CaseResult[] = [];
  let setupError: string | null = null;
  let dev: DeviceProfile | null = null;

  try {
    await target.start();
    const conn = await connectWithRetry(native, o.socketPath, 'discovery', o, target);
    try {
      const s = await negotiate(conn);
      dev = await discover(s, o.scratch);
    } finally {
      conn.close();
    }
    if (o.verbose) for (const l of describeProfile(dev)) out(`# ${l}`);
  } catch (e) {
    setupError = `discovery failed: ${(e as Error).message}`;
    if (target.proc?.exit)
      setupError += ` (server ${describeExit(target.proc.exit)}: ${target.proc.tail(400)})`;
  }

  if (setupError || !dev) {
    out(`FAIL  SETUP     discover the server  [${setupError}]`);
    for (const { group, c } of selected) {
      const r = skipped(group, c, 'setup failed');
      results.push(r);
      out(formatLine(r));
    }
  } else {
    // Once the server is gone for good (not spawned and no longer accepting, or no restart possible), the
    // remaining cases are skipped with the reason rather than each failing the same way.
    let gone: string | null = null;
    let restartFailures = 0;
    for (const { group, c } of selected) {
      if (gone) {
        const r = skipped(group, c, gone);
        results.push(r);
        out(formatLine(r));
        continue;
      }
      const r = await runCase(group, c, o, native, target, dev);
      results.push(r);
      out(formatLine(r));
      if (/server restart failed/.test(r.reason)) restartFailures++;
      else restartFailures = 0;
      if (restartFailures >= 2) gone = `the server cannot be restarted (since ${c.id})`;
      if (!target.spawned && !target.listening()) {
        gone = `the server stopped listening after ${c.id} (an exit or a crash: run with --spawn to tell and to restart it)`;
      }
    }
  }
  await target.stop();

  const passed = results.filter((r) => r.status === 'PASS').length;
  const warned = results.filter((r) => r.status === 'WARN').length;
  const failed = results.filter((r) => r.status === 'FAIL').length + (setupError ? 1 : 0);
  const nskipped = results.filter((r) => r.status === 'SKIP').length;
  out(summaryLine({ passed, warned, failed, skipped: nskipped }));
  const report: SuiteReport = {
    tool: 'vfio-user-conformance',
    socketPath: o.socketPath,
    profile: o.profile,
    spawn: o.spawn,
    server: dev ? serverSummary(dev) : null,
    startedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    summary: { passed, warned, failed, skipped: nskipped, total: results.length },
    setupError,
    restarts: target.restarts,
    cases: results,
  };
  if (o.jsonFile) writeFileSync(o.jsonFile, `${JSON.stringify(report, null, 2)}\n`);
  return report;
}

function serverSummary(d: DeviceProfile): Record<string, unknown> {
  return {
    vendor: d.vendor,
    device: d.device,
    driver: d.driver?.name ?? null,
    flags: d.info.flags,
    numRegions: d.info.numRegions,
    numIrqs: d.info.numIrqs,
    capabilities: d.caps.raw,
    regions: d.regions.map((r) => ({
      index: r.info.index,
      size: `0x${r.info.size.toString(16)}`,
      flags: r.info.flags,
      caps: r.info.caps.map((c) => c.id),
      fds: r.nfds,
    })),
    irqs: d.irqs.map((q) => ({ index: q.index, flags: q.flags, count: q.count })),
    migration: d.migration,
    writeMultiple: d.writeMultiple,
  };
}

export function formatLine(r: CaseResult): string {
  const reason = [r.reason, ...r.notes].filter(Boolean).join('; ');
  return `${r.status}  ${r.id.padEnd(8)}  ${r.title}${reason ? `  [${reason}]` : ''}`;
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timer = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new CaseFail(`${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timer]);
  } finally {
    clearTimeout(t);
  }
}

function caseBase(group: string, c: CaseDef) {
  return {
    id: c.id,
    group,
    title: c.title,
    basis: c.basis,
    checks: basisKind(c.id, c.basis),
    level: c.rule?.level ?? 'must',
    rule: c.rule?.cite ?? '',
  };
}

function skipped(group: string, c: CaseDef, reason: string): CaseResult {
  return { ...caseBase(group, c), status: 'SKIP', reason, notes: [], findings: [], durationMs: 0 };
}

export function summaryLine(s: { passed: number; warned: number; failed: number; skipped: number }): string {
  return `${s.passed} passed, ${s.warned} warned, ${s.failed} failed, ${s.skipped} skipped`;
}

async function runCase(
  group: string,
  c: CaseDef,
  o: SuiteOptions,
  native: NativeApi,
  target: Target,
  dev: DeviceProfile,
): Promise<CaseResult> {
  const t0 = Date.now();
  const ctx = new Ctx(c, o, native, target, dev);
  const findings = ctx.findings;
  const finding = (text: string, f: Partial<Finding> = {}) =>
    findings.push({ ...f, level: f.level ?? ctx.level, text });
  let skipReason: string | null = null;
  let exitText: string | undefined;
  // Why the server could not be reached again within the case (an exit: not a finding by itself).
  let goneReason: string | null = null;
  let thrown = false;
  target.expectExit = c.endsProcess === true;
  try {
    if (target.spawned && (!target.proc || (await target.settle()))) await target.restart();
    await withTimeout(c.run(ctx), c.timeoutMs ?? DEFAULT_CASE_TIMEOUT, 'the case');
  } catch (e) {
    if (e instanceof CaseSkip) skipReason = e.message;
    else if (e instanceof CaseFail) {
      thrown = true;
      finding(e.message, e.facts);
    } else if (e instanceof ServerGone) goneReason = e.message;
    else {
      let reason = `suite error: ${(e as Error).message}`;
      if (o.verbose) reason += ` ${(e as Error).stack ?? ''}`;
      finding(reason, { level: 'must' });
    }
  }
  // Protocol violations seen on any connection of the case: the server broke framing or sent what QEMU rejects.
  const violations = ctx.conns.flatMap((k) => k.violations);
  if (violations.length > 0)
    finding(`protocol violation: ${violations.slice(0, 3).join('; ')}`, { level: 'qemu' });
  // Liveness: on each connection the case still has (not expected to close), else on a fresh one.
  // (Not after a case that ended on a failed claim: its connections may hold replies it never read.)
  if (!goneReason && !thrown && !violations.length && (skipReason === null || ctx.conns.length > 0)) {
    try {
      await withTimeout(liveness(ctx, o, native, target), o.timeoutMs * 2 + 5000, 'the liveness probe');
    } catch (e) {
      if (e instanceof ServerGone) {
        ctx.note(`${e.message} after the case (not probed)`);
      } else if (e instanceof CaseFail) finding(e.message, e.facts);
      else finding(`liveness probe: ${(e as Error).message}`, { level: 'must' });
    }
  }
  ctx.cleanup();
  // Process supervision. An exit may not have been reported yet: look at /proc, and give a connection the
  // server dropped a moment to turn into an exit status.
  if (target.spawned && target.proc && !target.proc.exit) {
    const dropped = ctx.conns.some((k) => k.closed && k.closeReason !== 'closed by the suite');
    if (!pidAlive(target.proc.pid) || dropped || goneReason) await target.proc.waitExit(dropped ? 300 : 2000);
  }
  if (target.spawned) {
    const exit = target.unexpectedExit();
    if (exit) {
      exitText = describeExit(exit);
      const tail = target.proc?.tail(300).trim() ?? '';
      if (exit.signal) {
        // A crash loses the device for whichever client was attached (QEMU's guest included): FAIL in every profile.
        finding(`server process ${exitText} (crash)${tail ? `: ${tail}` : ''}`, { level: 'qemu' });
      } else {
        ctx.note(
          `the server process ${exitText}${tail ? ` (${tail.split('\n').filter(Boolean).pop()})` : ''}`,
        );
      }
    }
    if (target.proc?.exit) {
      try {
        await target.restart();
      } catch (e) {
        finding(`server restart failed: ${(e as Error).message}`, { level: 'must' });
      }
    }
  }
  target.expectExit = false;
  if (goneReason) {
    // The case needed the server again and it was gone: legal (spec "Client Disconnection": "the server can
    // automatically exit"), but what the case checks after that point was not checked.
    finding(
      `${goneReason} when the case connected again, so the rest of the case was not checked (a server may ` +
        'exit when its client leaves; it then serves one client per process)',
      { level: 'choice' },
    );
  }
  const graded = findings.map((f) => ({ f, v: verdictOf(f, o.profile, c.rule) }));
  const verdict = worst(graded.map((g) => g.v));
  let status: CaseResult['status'] = verdict;
  let reason = graded
    .filter((g) => g.v === verdict && verdict !== 'PASS')
    .map((g) => g.f.text)
    .join('; ');
  const accepted = graded.filter((g) => g.v === 'PASS').map((g) => g.f.text);
  if (skipReason !== null && verdict === 'PASS') {
    status = 'SKIP';
    reason = skipReason;
  }
  const notes = status === 'SKIP' ? [] : [...accepted, ...ctx.notes];
  return {
    ...caseBase(group, c),
    status,
    reason,
    notes,
    findings: graded.map((g) => ({
      verdict: g.v,
      level: g.f.level,
      text: g.f.text,
      qemu: breaksQemu(g.f, c.rule),
      ...(g.f.lvu ? { lvu: true } : {}),
    })),
    ...(exitText || ctx.exits.length
      ? { exit: [...ctx.exits, ...(exitText ? [exitText] : [])].join('; ') }
      : {}),
    durationMs: Date.now() - t0,
  };
}

async function liveness(ctx: Ctx, o: SuiteOptions, native: NativeApi, target: Target): Promise<void> {
  let probed = 0;
  for (const k of ctx.conns) {
    if (ctx.closeExpected.has(k) || k.tainted) continue;
    if (k.closed) {
      if (k.closeReason === 'closed by the suite') continue;
      throw new CaseFail(
        `the server closed the connection (${k.closeReason ?? 'EOF'}) although the case expects it open`,
      );
    }
    if (k.pendingReplies() > 0) {
      const r = k.drain()[0]!;
      // A reply nobody asked for: "unexpected reply" to QEMU, which then drops the connection.
      throw new CaseFail(
        `unexpected extra reply (id ${r.hdr.id}, cmd ${r.hdr.cmd}, flags 0x${r.hdr.flags.toString(16)}) after the case`,
        { level: 'qemu' },
      );
    }
    if (!k.negotiated) continue;
    await probeConn(k);
    probed++;
  }
  if (probed > 0) return;
  // The server may serve one client at a time: let go of the case's connections before probing anew.
  for (const k of ctx.conns) k.close();
  if (target.spawned && target.proc?.exit && ctx.caseDef.endsProcess) return;
  if (ctx.caseDef.endsProcess && !target.listening()) return;
  // A fresh client must still be served: a server that stops serving after a bad client is a denial of service.
  const k = await connectWithRetry(native, o.socketPath, `${ctx.caseDef.id}/probe`, o, target);
  try {
    const s = await negotiate(k);
    await s.probe();
  } catch (e) {
    // The server may be exiting right now (it accepted, then went away): tell an exit from a refusal.
    if (target.spawned && target.proc) await target.proc.waitExit(1000);
    if (target.spawned && target.proc?.exit && target.proc.exit.signal === null)
      throw new ServerGone(`the server exited with code ${target.proc.exit.code}`);
    throw new CaseFail(`liveness probe on a new connection: ${(e as Error).message}`, { level: 'must' });
  } finally {
    k.close();
  }
}
