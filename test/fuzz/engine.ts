// A small coverage-guided fuzzer for JavaScript on V8's own block coverage (node:inspector, Profiler precise
// coverage with call counts, reset by every take): no native module, nothing downloaded. Jazzer.js would need
// prebuilt binaries from outside the npm registry, which this project cannot fetch.
//
// Loop: pick an input from the corpus (seeded PRNG, so a run is reproducible), mutate it, run the target, take the
// coverage of that one execution and keep the input when it reached a block (in the files under test) that no
// earlier input reached. A target throws only for bugs: an expected refusal (the errno a peer would get) must be
// caught by the target itself. Every unexpected throw is a finding (input + error, deduplicated by message).
import { Session } from 'node:inspector';

export interface FuzzTarget {
  name: string;
  /** Runs one input; throws only on a bug. */
  run(input: Uint8Array): void | Promise<void>;
  /** Seed inputs (vectors, encoded requests, conformance messages). */
  seeds(): Uint8Array[];
  /** Which scripts count for coverage (URL substrings). */
  cover: string[];
  /** Largest input the mutator makes. */
  maxLen?: number;
  /** Releases what the target holds (servers, sockets). */
  close?(): Promise<void>;
}

export interface Finding {
  input: Uint8Array;
  error: string;
}

export interface FuzzResult {
  target: string;
  execs: number;
  ms: number;
  corpus: number;
  /** Distinct blocks reached / blocks seen in the covered scripts (V8 block ranges). */
  blocksCovered: number;
  blocksTotal: number;
  findings: Finding[];
}

/** mulberry32: small, fast, seeded. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const INTERESTING_32 = [
  0, 1, 2, 7, 8, 15, 16, 17, 24, 32, 255, 256, 4096, 0x7fff, 0xffff, 0x10000, 0x7fffffff, 0xffffffff,
];

export function mutate(
  rand: () => number,
  input: Uint8Array,
  corpus: Uint8Array[],
  maxLen: number,
): Uint8Array {
  const ri = (n: number) => Math.floor(rand() * n);
  let b = Uint8Array.from(input);
  const rounds = 1 + ri(4);
  for (let r = 0; r < rounds; r++) {
    const op = ri(9);
    if (b.length === 0 && op < 6) {
      b = Uint8Array.of(ri(256));
      continue;
    }
    switch (op) {
      case 0: // flip a bit
        b[ri(b.length)]! ^= 1 << ri(8);
        break;
      case 1: // random byte
        b[ri(b.length)] = ri(256);
        break;
      case 2: // interesting u32 LE at a 4-aligned offset
      case 3: {
        if (b.length < 4) break;
        const at = ri(b.length >> 2) << 2;
        new DataView(b.buffer).setUint32(at, INTERESTING_32[ri(INTERESTING_32.length)]!, true);
        break;
      }
      case 4: {
        // the message's own length in a u32 field (sizes, argsz)
        if (b.length < 4) break;
        const at = ri(b.length >> 2) << 2;
        new DataView(b.buffer).setUint32(at, b.length + ri(3) - 1, true);
        break;
      }
      case 5: {
        // delete a run
        const at = ri(b.length);
        const n = 1 + ri(Math.min(16, b.length - at));
        b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at + n)]);
        break;
      }
      case 6: {
        // insert random bytes
        const at = ri(b.length + 1);
        const ins = Array.from({ length: 1 + ri(8) }, () => ri(256));
        b = Uint8Array.from([...b.subarray(0, at), ...ins, ...b.subarray(at)]);
        break;
      }
      case 7: {
        // splice with another corpus entry
        const o = corpus[ri(corpus.length)]!;
        const at = ri(b.length + 1);
        b = Uint8Array.from([...b.subarray(0, at), ...o.subarray(ri(o.length + 1))]);
        break;
      }
      default: {
        // duplicate a chunk
        const at = ri(b.length);
        const n = 1 + ri(Math.min(64, b.length - at));
        b = Uint8Array.from([...b.subarray(0, at + n), ...b.subarray(at, at + n), ...b.subarray(at + n)]);
      }
    }
  }
  return b.length > maxLen ? b.subarray(0, maxLen) : b;
}

interface Range {
  startOffset: number;
  endOffset: number;
  count: number;
}
interface ScriptCoverage {
  url: string;
  functions: { ranges: Range[] }[];
}

class Coverage {
  private readonly s = new Session();
  constructor() {
    this.s.connect();
  }
  post<T>(method: string, params: object = {}): Promise<T> {
    return new Promise((resolve, reject) =>
      this.s.post(method, params, (err, res) => (err ? reject(err) : resolve(res as T))),
    );
  }
  async start(): Promise<void> {
    await this.post('Profiler.enable');
    await this.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
  }
  async take(): Promise<ScriptCoverage[]> {
    return (await this.post<{ result: ScriptCoverage[] }>('Profiler.takePreciseCoverage')).result;
  }
  async stop(): Promise<void> {
    await this.post('Profiler.stopPreciseCoverage');
    await this.post('Profiler.disable');
    this.s.disconnect();
  }
}

export interface FuzzOptions {
  execs: number;
  seed: number;
  /** Stop early after this many ms (the run stays deterministic up to where it stopped). */
  timeLimitMs?: number;
  /** Called with each input that found new coverage (make fuzz saves them). */
  onNew?: (input: Uint8Array) => void;
}

export async function fuzz(t: FuzzTarget, o: FuzzOptions): Promise<FuzzResult> {
  const rand = prng(o.seed);
  const maxLen = t.maxLen ?? 4096;
  const cov = new Coverage();
  await cov.start();
  const seen = new Set<string>(); // blocks reached so far
  const all = new Set<string>(); // blocks known
  const corpus: Uint8Array[] = [];
  const findings = new Map<string, Finding>();
  const t0 = Date.now();
  await cov.take(); // reset the counters: start from here

  const exec = async (input: Uint8Array): Promise<boolean> => {
    try {
      await t.run(input);
    } catch (err) {
      const e = err as Error;
      const key = `${e?.name}: ${e?.message}`.replace(/\d+/g, 'N');
      if (!findings.has(key))
        findings.set(key, { input, error: `${e?.name}: ${e?.message}\n${e?.stack ?? ''}` });
    }
    let fresh = false;
    for (const sc of await cov.take()) {
      if (!t.cover.some((c) => sc.url.includes(c))) continue;
      for (const f of sc.functions) {
        for (const r of f.ranges) {
          const k = `${sc.url}:${r.startOffset}:${r.endOffset}`;
          all.add(k);
          if (r.count > 0 && !seen.has(k)) {
            seen.add(k);
            fresh = true;
          }
        }
      }
    }
    return fresh;
  };

  let execs = 0;
  for (const s of t.seeds()) {
    execs++;
    if ((await exec(s)) || corpus.length === 0) corpus.push(s);
  }
  while (execs < o.execs) {
    if (o.timeLimitMs !== undefined && Date.now() - t0 > o.timeLimitMs) break;
    const parent = corpus[Math.floor(rand() * corpus.length)]!;
    const child = mutate(rand, parent, corpus, maxLen);
    execs++;
    if (await exec(child)) {
      corpus.push(child);
      o.onNew?.(child);
    }
  }
  await cov.stop();
  return {
    target: t.name,
    execs,
    ms: Date.now() - t0,
    corpus: corpus.length,
    blocksCovered: seen.size,
    blocksTotal: all.size,
    findings: [...findings.values()],
  };
}
