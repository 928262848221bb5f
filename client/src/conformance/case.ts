// The case model and the context every case runs in.
//
// A case passes by returning, and is skipped by throwing CaseSkip (skip()), always with a reason. What the server
// does wrong is a finding: fail() throws one and ends the case, ctx.deviates()/ctx.lvuDiffers() record one and go
// on. A finding carries facts only (its level: must/qemu/should/choice/lvu, whether it is libvfio-user's documented
// behaviour, whether QEMU tolerates it); the profile turns facts into a verdict (verdict.ts), so a case never
// looks at the profile. The context hands out connections (tracked so that the runner can probe and close them),
// fd-leak checks against the server process, and errno judging.

import { setTimeout as sleep } from 'node:timers/promises';
import { errnoName } from 'vfio-user-protocol';
import {
  CaseFail,
  CaseSkip,
  type Conn,
  expectErrorShape,
  type FindingFacts,
  fail,
  type Level,
  type Msg,
  skip,
} from './conn.js';
import type { DevDriver, Scratch } from './devices.js';
import type { NativeApi } from './native.js';
import type { DeviceProfile } from './profile.js';
import { connectRaw, negotiate, type Session, type VersionOptions } from './session.js';
import type { Target } from './target.js';

export type Profile = 'spec' | 'lvu' | 'qemu';
export const PROFILES: readonly Profile[] = ['spec', 'lvu', 'qemu'];

/** The rule a case holds the server to: its level and where it comes from (a spec quotation or section, or the
 * QEMU behaviour it protects). Attached from rules.ts. */
export interface Rule {
  level: Level;
  cite: string;
  /** QEMU 11.1 never sends this command or relies on it: the qemu profile downgrades a must here to WARN. */
  qemu?: 'unused';
}

/** One deviation seen by a case, with its facts (the verdict comes from the profile). */
export interface Finding extends FindingFacts {
  level: Level;
  text: string;
}

export interface CaseDef {
  /** Catalogue id (listed in docs/conformance-index.md), e.g. `MAP-10`; ROB-* are the suite's own additions. */
  id: string;
  title: string;
  /** Basis codes from the catalogue: S, S~, L, Q, K (comma separated), plus PCI. */
  basis: string;
  /** The rule the case checks (from rules.ts; every case has one). */
  rule?: Rule;
  /** The server process may end (spawn mode restarts it; no crash report). */
  endsProcess?: boolean;
  /**
   * The case checks that the server serves the next client after the previous one left: a server that exited
   * instead is a finding (a legal choice, WARN). Otherwise the suite restarts an exited server (--spawn) when
   * the case connects again, and goes on.
   */
  servesNext?: boolean;
  /** Per-case time limit (default 30 s). */
  timeoutMs?: number;
  run(ctx: Ctx): Promise<void>;
}

export interface Group {
  name: string;
  title: string;
  cases: CaseDef[];
}

export type Status = 'PASS' | 'WARN' | 'FAIL' | 'SKIP';

/** What a case's basis makes it: a spec rule, or something else, said plainly. */
export function basisKind(id: string, basis: string): string {
  const codes = basis.split(/[,\s]+/).filter(Boolean);
  if (id.startsWith('ROB-')) return 'suite addition (spec-implied robustness)';
  if (codes.includes('S')) return 'spec rule';
  if (codes.includes('S~')) return 'spec-implied recommendation';
  if (codes.includes('Q')) return 'QEMU interoperability';
  if (codes.includes('K')) return 'Linux VFIO semantics';
  if (codes.includes('PCI')) return 'PCI rule';
  return "libvfio-user's choice, not a spec rule";
}

export interface CaseResult {
  id: string;
  group: string;
  title: string;
  basis: string;
  /** basisKind(): whether the case checks a spec rule or, say, libvfio-user's choice. */
  checks: string;
  /** The rule's level and citation. */
  level: Level;
  rule: string;
  status: Status;
  reason: string;
  notes: string[];
  /** Every deviation with the verdict the profile gave it (FAIL/WARN, or PASS when the profile accepts it). */
  findings: {
    verdict: 'FAIL' | 'WARN' | 'PASS';
    level: Level;
    text: string;
    /** QEMU 11.1 would not accept this (it drops the connection, fails realize, mis-parses). */
    qemu: boolean;
    lvu?: boolean;
  }[];
  /** How the spawned server process ended during the case, if it did: "exited with code 1", "killed by SIGABRT". */
  exit?: string;
  durationMs: number;
}

export interface RunOptions {
  socketPath: string;
  profile: Profile;
  timeoutMs: number;
  verbose: boolean;
  scratch: Scratch | null;
}

/** How an errno is judged: `want` are the expected values; `basis` says whether the errno itself is normative. */
export interface ErrnoRule {
  want: number[];
  /** 'S' = the errno is a spec rule; anything else = a choice (recorded under `spec`, held under `lvu`). */
  basis: 'S' | 'L' | 'S~' | 'K';
  /** libvfio-user's documented alternative(s), accepted under `--profile lvu`. */
  lvu?: number[];
}

/** The spawned server is gone (an exit with a code, or a non-spawned server no longer listening): the suite
 * cannot reach it again within this case. Not a crash; the runner reports it and restarts the server. */
export class ServerGone extends Error {
  override name = 'ServerGone';
}

export class Ctx {
  readonly notes: string[] = [];
  readonly findings: Finding[] = [];
  /** Exits of the spawned server the case restarted it after. */
  readonly exits: string[] = [];
  readonly conns: Conn[] = [];
  /** Connections the case expects the server to close (or to have desynced): no liveness probe on them. */
  readonly closeExpected = new Set<Conn>();
  /** fds the case created (memfds, eventfds): closed by the runner after the case. */
  readonly ownedFds: number[] = [];

  constructor(
    readonly caseDef: CaseDef,
    readonly opts: RunOptions,
    readonly native: NativeApi,
    readonly target: Target,
    readonly dev: DeviceProfile,
  ) {}

  note(s: string): void {
    this.notes.push(s);
  }

  /** The case rule's level. */
  get level(): Level {
    return this.caseDef.rule?.level ?? 'must';
  }

  /** Records a deviation and goes on (default level: should). */
  deviates(text: string, facts: FindingFacts = {}): void {
    this.findings.push({ ...facts, level: facts.level ?? 'should', text });
  }

  /** Records that the server's answer is legal but not libvfio-user's (a WARN under --profile lvu only). */
  lvuDiffers(text: string): void {
    this.findings.push({ level: 'lvu', text });
  }

  /** A connected, not yet negotiated connection. */
  async raw(label = 'raw', keepOthers = false): Promise<Conn> {
    // One connection at a time unless asked: a server may serve one client at a time and queue the next.
    if (!keepOthers) {
      for (const k of this.conns) {
        if (!k.closed) {
          k.close();
          await sleep(20);
        }
      }
    }
    // A server may exit when a client leaves or fails to negotiate; unless that is what the case checks, start
    // it again and go on (the exit is reported with the case).
    const t = this.target;
    if (t.spawned && !this.caseDef.servesNext && !this.caseDef.endsProcess && t.proc) {
      const e = await t.settle();
      if (e && e.signal === null) {
        this.note(`the server exited with code ${e.code} after the previous client; restarted`);
        this.exits.push(`exited with code ${e.code}`);
        await t.restart();
      }
    }
    const c = await connectWithRetry(
      this.native,
      this.opts.socketPath,
      `${this.caseDef.id}/${label}`,
      this.opts,
      t,
    );
    this.conns.push(c);
    return c;
  }

  /** A negotiated session (VERSION done; default: QEMU's request). */
  async session(o: VersionOptions = {}, label = 'session', keepOthers = false): Promise<Session> {
    const c = await this.raw(label, keepOthers);
    return negotiate(c, o);
  }

  /** This connection is expected to be closed by the server, or was desynced on purpose: never reuse it. */
  expectClose(c: Conn): void {
    this.closeExpected.add(c);
    c.tainted = true;
  }

  /** A memfd of `size` bytes, closed after the case. */
  memfd(size: number, name = 'conformance'): number {
    const fd = this.native.memfd(name, size);
    this.ownedFds.push(fd);
    return fd;
  }

  /** An eventfd, closed after the case. */
  eventfd(): number {
    const fd = this.native.eventfd();
    this.ownedFds.push(fd);
    return fd;
  }

  eventfds(n: number): number[] {
    return Array.from({ length: n }, () => this.eventfd());
  }

  /** Adopt an fd for closing after the case. */
  own(fd: number): number {
    this.ownedFds.push(fd);
    return fd;
  }

  /** The smallest page size the server accepts (pgsizes), 4096 by default. */
  get pg(): bigint {
    const p = this.dev.caps.pgsizes;
    return p > 0n ? p & -p : 4096n;
  }

  /**
   * Runs `body` and then requires the server's fd count to come back to what it was before. Without a server
   * pid (remote server) the body still runs and a note records that leaks were not checked.
   */
  async fdNeutral<T>(what: string, body: () => Promise<T>): Promise<T> {
    const pid = this.target.serverPid();
    const base = pid === null ? null : await this.settledFdCount();
    const r = await body();
    if (base === null) this.note('fd leaks not checked (server pid unknown)');
    else await this.fdsBackTo(base, what);
    return r;
  }

  cleanup(): void {
    for (const c of this.conns) c.close();
    for (const fd of this.ownedFds.splice(0)) {
      try {
        this.native.closeFd(fd);
      } catch {
        // already closed
      }
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Requirements: skip with a reason when the server does not offer what the case needs.

  needDriver(): DevDriver {
    if (!this.dev.driver) {
      skip(
        `needs a device the suite can drive to DMA/interrupt (*dev*); device ` +
          `${this.dev.vendor.toString(16)}:${this.dev.device.toString(16)} is unknown (known: edu 1234:11e8)`,
      );
    }
    return this.dev.driver;
  }

  needScratch(): Scratch {
    if (!this.dev.scratch) {
      skip('needs a scratch register (M): unknown device and no --scratch REGION:OFFSET given');
    }
    return this.dev.scratch;
  }

  needSpawn(): void {
    if (!this.target.spawned) skip('needs --spawn (the suite must start the server process itself)');
  }

  needPid(): number {
    const pid = this.target.serverPid();
    if (pid === null) skip('needs the server pid (run the server on this machine, or use --spawn)');
    return pid;
  }

  needReset(): void {
    if (!this.dev.reset) skip('the server does not advertise DEVICE_RESET (GET_INFO flags lack RESET)');
  }

  needMigration(): void {
    if (!this.dev.migration) skip('the server does not offer migration (DEVICE_FEATURE MIGRATION GET fails)');
  }

  needNoMigration(): void {
    if (this.dev.migration) skip('the server offers migration (this case checks the "not offered" errors)');
  }

  needVectors(min = 1): { index: number; count: number } {
    const v = this.dev.vectors;
    if (!v || v.count < min) {
      skip(`needs an MSI/MSI-X index with at least ${min} vector(s) (found ${v ? v.count : 'none'})`);
    }
    return v;
  }

  needMmapRegion(): number {
    if (this.dev.mmapRegion === null) skip('no region reports MMAP (N)');
    return this.dev.mmapRegion;
  }

  needAbsentBar(): number {
    if (this.dev.absentBar === null) skip('every BAR is implemented (no absent BAR, Z)');
    return this.dev.absentBar;
  }

  needMemBar(): DeviceProfile['memBars'][number] {
    const b = this.dev.memBars[0];
    if (!b) skip('no implemented memory BAR');
    return b;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Judging replies.

  /** An error reply whose errno satisfies `rule` under the current profile. Returns the errno. */
  errno(m: Msg, what: string, rule: ErrnoRule): number {
    const e = expectErrorShape(m, what);
    this.judgeErrno(e, what, rule);
    return e;
  }

  /**
   * The errno of an error reply, judged by `rule`: one the spec names ('S') is a must; a recommended one
   * ('S~', 'K') a should; one only libvfio-user picks ('L') is a legal choice, which only --profile lvu holds.
   * libvfio-user's documented alternatives (`rule.lvu`) are findings that --profile lvu accepts.
   */
  judgeErrno(e: number, what: string, rule: ErrnoRule): void {
    const names = (l: number[]) => l.map(errnoName).join('/');
    if (rule.want.includes(e)) return;
    const lvu = rule.lvu ?? [];
    if (lvu.includes(e)) {
      const level: Level = rule.basis === 'S' ? 'must' : 'should';
      this.deviates(
        `${what}: ${errnoName(e)} is libvfio-user's choice; ${rule.basis === 'S' ? 'the spec requires' : 'recommended:'} ${names(rule.want)}`,
        { level, lvu: true },
      );
      return;
    }
    if (rule.basis === 'S')
      fail(`${what}: ${errnoName(e)}, the spec requires ${names(rule.want)}`, { level: 'must' });
    if (rule.basis === 'L') {
      this.lvuDiffers(
        `${what}: ${errnoName(e)} (the spec names no errno; libvfio-user answers ${names(rule.want)})`,
      );
      return;
    }
    this.deviates(`${what}: ${errnoName(e)} (recommended ${names([...rule.want])}; the spec names no errno)`);
  }

  /** A reply that must be an error (any errno); the errno is recorded. */
  anyError(m: Msg, what: string): number {
    const e = expectErrorShape(m, what);
    this.note(`${what}: ${errnoName(e)}`);
    return e;
  }

  /** A NO_REPLY command must get no reply: `c` stays quiet for `ms`. */
  async noReply(c: Conn, what: string, ms = 300): Promise<void> {
    if (!(await c.quiet(ms))) {
      const r = c.drain()[0];
      fail(
        `${what}: the server replied to a NO_REPLY command` +
          (r ? ` (id ${r.hdr.id}, flags 0x${r.hdr.flags.toString(16)}, ${r.hdr.size} bytes)` : ''),
      );
    }
  }

  /**
   * Waits for either an error reply to (id, cmd) or the server closing the connection. Returns what happened.
   * A success reply fails the case. The connection is not reused afterwards.
   */
  async errorOrClose(
    c: Conn,
    id: number,
    cmd: number,
    what: string,
    rule: ErrnoRule | null,
    ms = this.opts.timeoutMs,
  ): Promise<'error' | 'close'> {
    this.expectClose(c);
    const r = await c.nextReply(ms);
    if (r === 'closed') return 'close';
    if (r === 'timeout') fail(`${what}: neither a reply nor a close within ${ms} ms`);
    if (r.hdr.id !== id || r.hdr.cmd !== cmd) fail(`${what}: reply for id ${r.hdr.id} cmd ${r.hdr.cmd}`);
    if (rule) this.errno(r, what, rule);
    else this.anyError(r, what);
    return 'error';
  }

  // -------------------------------------------------------------------------------------------------------------
  // fd leaks in the server process.

  /**
   * The server's fd count once it stops changing (the previous case's connections may still be closing on the
   * server's side; a baseline taken then would hide a leak).
   */
  async settledFdCount(): Promise<number | null> {
    let a = this.target.fdCount();
    for (let i = 0; i < 20; i++) {
      await sleep(50);
      const b = this.target.fdCount();
      if (b === a) return b;
      a = b;
    }
    return a;
  }

  /** Current fd count of the server process, or skip when unknown. */
  fdCount(): number {
    this.needPid();
    const n = this.target.fdCount();
    if (n === null) skip('cannot read /proc/<server pid>/fd');
    return n;
  }

  /** Waits (up to 2 s) for the server's fd count to come back to `baseline`; fails with the difference. */
  async fdsBackTo(baseline: number, what: string, ms = 2000): Promise<void> {
    const deadline = Date.now() + ms;
    let n = this.target.fdCount();
    while (n !== null && n > baseline && Date.now() < deadline) {
      await sleep(25);
      n = this.target.fdCount();
    }
    if (n === null) fail(`${what}: the server process went away`);
    if (n > baseline)
      // A leak per message runs the server out of fds, then it can take no client: a denial of service.
      fail(`${what}: the server holds ${n - baseline} more fd(s) than before (${baseline} -> ${n})`, {
        level: 'must',
      });
  }

  /** Waits until `pred` or `ms`. */
  async eventually(pred: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (await pred()) return true;
      if (Date.now() > deadline) return false;
      await sleep(10);
    }
  }
}

/**
 * Connects, retrying briefly: a server may still be cleaning up the previous client (or restarting). When the
 * spawned server has exited (with a code: not a crash), or a server the suite did not start no longer listens,
 * throws ServerGone instead of failing: whether that is acceptable is the caller's call.
 */
export async function connectWithRetry(
  native: NativeApi,
  path: string,
  label: string,
  opts: { timeoutMs: number },
  target?: Target,
): Promise<Conn> {
  const deadline = Date.now() + 3000;
  for (;;) {
    try {
      return await connectRaw(native, path, label, opts.timeoutMs);
    } catch (e) {
      const exit = target?.spawned ? target.proc?.exit : null;
      if (exit && exit.signal === null) throw new ServerGone(`the server exited with code ${exit.code}`);
      if (Date.now() > deadline) {
        if (target && !target.spawned && !target.listening())
          throw new ServerGone(`the server no longer listens on ${path}`);
        throw new CaseFail(`cannot connect to ${path}: ${(e as Error).message}`, { level: 'must' });
      }
      await sleep(50);
    }
  }
}

export { CaseFail, CaseSkip, fail, skip };
