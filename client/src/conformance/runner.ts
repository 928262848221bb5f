// Runs the cases against one server: discovery first, then every selected case with its liveness probe,
// process supervision (spawn mode: a crash fails the case, the server is restarted), and the report.
import { writeFileSync } from 'node:fs';
import {
  basisKind,
  type CaseDef,
  CaseFail,
  type CaseResult,
  CaseSkip,
  Ctx,
  connectWithRetry,
  type Group,
  type RunOptions,
} from './case.js';
import { allGroups } from './cases/index.js';
import { loadNative, type NativeApi } from './native.js';
import { type DeviceProfile, describeProfile, discover } from './profile.js';
import { negotiate, probeConn } from './session.js';
import { describeExit, pidAlive, Target } from './target.js';

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
  summary: { passed: number; failed: number; skipped: number; total: number };
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
  const groups = o.groups ?? allGroups;
  const selected = selectCases(groups, o.only);
  const target = new Target(o.socketPath, o.spawn);
  const started = Date.now();
  const results: CaseResult[] = [];
  let setupError: string | null = null;
  let dev: DeviceProfile | null = null;

  try {
    await target.start();
    const conn = await connectWithRetry(native, o.socketPath, 'discovery', o);
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
      const r: CaseResult = {
        id: c.id,
        group,
        title: c.title,
        basis: c.basis,
        checks: basisKind(c.id, c.basis),
        status: 'SKIP',
        reason: 'setup failed',
        notes: [],
        durationMs: 0,
      };
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
        const r: CaseResult = {
          id: c.id,
          group,
          title: c.title,
          basis: c.basis,
          checks: basisKind(c.id, c.basis),
          status: 'SKIP',
          reason: gone,
          notes: [],
          durationMs: 0,
        };
        results.push(r);
        out(formatLine(r));
        continue;
      }
      const r = await runCase(group, c, o, native, target, dev);
      results.push(r);
      out(formatLine(r));
      if (r.status === 'FAIL' && /server restart failed/.test(r.reason)) restartFailures++;
      else restartFailures = 0;
      if (restartFailures >= 2) gone = `the server cannot be restarted (since ${c.id})`;
      if (!target.spawned && r.status === 'FAIL' && /cannot connect to/.test(r.reason)) {
        gone = `the server stopped accepting connections after ${c.id} (run with --spawn to restart it)`;
      }
    }
  }
  await target.stop();

  const passed = results.filter((r) => r.status === 'PASS').length;
  const failed = results.filter((r) => r.status === 'FAIL').length + (setupError ? 1 : 0);
  const skipped = results.filter((r) => r.status === 'SKIP').length;
  out(`${passed} passed, ${failed} failed, ${skipped} skipped`);
  const report: SuiteReport = {
    tool: 'vfio-user-conformance',
    socketPath: o.socketPath,
    profile: o.profile,
    spawn: o.spawn,
    server: dev ? serverSummary(dev) : null,
    startedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    summary: { passed, failed, skipped, total: results.length },
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
  let status: CaseResult['status'] = 'PASS';
  let reason = '';
  target.expectExit = c.endsProcess === true;
  try {
    if (target.spawned && (!target.proc || target.proc.exit)) await target.restart();
    await withTimeout(c.run(ctx), c.timeoutMs ?? DEFAULT_CASE_TIMEOUT, 'the case');
  } catch (e) {
    if (e instanceof CaseSkip) {
      status = 'SKIP';
      reason = e.message;
    } else if (e instanceof CaseFail) {
      status = 'FAIL';
      reason = e.message;
    } else {
      status = 'FAIL';
      reason = `suite error: ${(e as Error).message}`;
      if (o.verbose) reason += ` ${(e as Error).stack ?? ''}`;
    }
  }
  // Protocol violations seen on any connection of the case.
  const violations = ctx.conns.flatMap((k) => k.violations);
  if (status !== 'FAIL' && violations.length > 0) {
    status = 'FAIL';
    reason = `protocol violation: ${violations.slice(0, 3).join('; ')}`;
  }
  // Liveness: on each connection the case still has (not expected to close), else on a fresh one.
  if (status === 'PASS' || (status === 'SKIP' && ctx.conns.length > 0)) {
    try {
      await withTimeout(liveness(ctx, o, native, target), o.timeoutMs * 2 + 5000, 'the liveness probe');
    } catch (e) {
      status = 'FAIL';
      reason = e instanceof CaseFail ? e.message : `liveness probe: ${(e as Error).message}`;
    }
  }
  ctx.cleanup();
  // Process supervision. An exit may not have been reported yet: look at /proc, and give a connection the
  // server dropped a moment to turn into an exit status.
  if (target.spawned && target.proc && !target.proc.exit) {
    const dropped = ctx.conns.some((k) => k.closed && k.closeReason !== 'closed by the suite');
    if (!pidAlive(target.proc.pid) || dropped) await target.proc.waitExit(dropped ? 300 : 2000);
  }
  if (target.spawned) {
    const exit = target.unexpectedExit();
    if (exit) {
      status = 'FAIL';
      reason = `server process ${describeExit(exit)} (crash) ${target.proc?.tail(400) ?? ''}`.trim();
    }
    if (target.proc?.exit) {
      try {
        await target.restart();
      } catch (e) {
        if (status !== 'FAIL') {
          status = 'FAIL';
          reason = `server restart failed: ${(e as Error).message}`;
        }
      }
    }
  }
  target.expectExit = false;
  return {
    id: c.id,
    group,
    title: c.title,
    basis: c.basis,
    checks: basisKind(c.id, c.basis),
    status,
    reason,
    notes: status === 'SKIP' ? [] : ctx.notes,
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
      throw new CaseFail(
        `unexpected extra reply (id ${r.hdr.id}, cmd ${r.hdr.cmd}, flags 0x${r.hdr.flags.toString(16)}) after the case`,
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
  const k = await connectWithRetry(native, o.socketPath, `${ctx.caseDef.id}/probe`, o);
  try {
    const s = await negotiate(k);
    await s.probe();
  } catch (e) {
    throw new CaseFail(`liveness probe on a new connection: ${(e as Error).message}`);
  } finally {
    k.close();
  }
}
