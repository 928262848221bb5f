// A structural check of untrusted msgpack bytes (migration data from the client) BEFORE any decoder allocates
// for them. msgpackr trusts the element counts it reads: `dd <128 Mi>` followed by 128 Mi x `90` made it build a
// 128 Mi-element array of empty arrays (2 GB, 11-14 s with the loop blocked), and 200 Mi x `c0` aborted V8. This
// walk allocates nothing that depends on the input: it reads each header, checks the count or length it announces
// against the budgets (bytes left, elements left, nesting depth) before moving on, and gives up after a time
// budget. Only a stream that passes is handed to the decoder. Extension types are refused (the device state uses
// none, and a decoder's extension handlers could allocate on their own terms); so are the reserved byte 0xc1 and
// arrays, maps or bins used as map keys (msgpackr throws on them; found by the msgpack-budget fuzz target).

/**
 * What decoding a msgpack value may cost: bytes, elements, nesting depth and time; checked by a structural walk
 * before decoding.
 */
export interface MsgpackBudget {
  /** Largest input (bytes). */
  maxBytes: number;
  /** Most values in total (every scalar, array element, map key and map value counts one). */
  maxElements: number;
  /** Deepest nesting of arrays/maps (the top-level value is depth 0). */
  maxDepth: number;
  /** Wall-clock budget for the walk (ms). */
  maxMs: number;
}

/** Why a stream was refused (the caller turns it into EINVAL). */
export class MsgpackBudgetError extends Error {
  override name = 'MsgpackBudgetError';
}

/** Checks that `b` holds exactly one msgpack value within `budget`; throws MsgpackBudgetError otherwise. */
export function checkMsgpack(b: Uint8Array, budget: MsgpackBudget): void {
  const w = new MsgpackBudgetWalk(b.length, budget);
  w.push(b);
  w.end();
}

/** Bytes of the length field after a type byte (str/bin 8/16/32, array/map 16/32); 0 for every other type. */
function lengthBytes(c: number): number {
  switch (c) {
    case 0xc4:
    case 0xd9:
      return 1;
    case 0xc5:
    case 0xda:
    case 0xdc:
    case 0xde:
      return 2;
    case 0xc6:
    case 0xdb:
    case 0xdd:
    case 0xdf:
      return 4;
    default:
      return 0;
  }
}

/** Payload bytes of fixed-size scalars (floats, ints). */
const FIXED: Record<number, number> = {
  202: 4,
  203: 8,
  204: 1,
  208: 1,
  205: 2,
  209: 2,
  206: 4,
  210: 4,
  207: 8,
  211: 8,
};

/**
 * The same walk over a stream of `total` bytes that arrives in pieces (migration data, MIG_DATA_WRITE by
 * MIG_DATA_WRITE): each push is checked as it comes, so a bomb is refused at the write that reveals it instead of
 * after the client sent everything. The state kept between pushes is bounded: the open containers (at most
 * maxDepth), a partial header (at most 5 bytes) and the payload bytes still to pass. The time budget counts the
 * time spent inside push().
 */
export class MsgpackBudgetWalk {
  /** `open[d]` = values still expected by the container at depth d+1 (bounded by maxDepth). */
  private readonly open: number[] = [];
  /** Whether open[d] is a map (a key is due when an even count is left). */
  private readonly isMap: boolean[] = [];
  private elements = 0;
  /** Bytes of the stream consumed. */
  private pos = 0;
  /** Payload bytes of the current string, bin or number still to pass. */
  private skip = 0;
  /** A header split across pushes: the type byte and its length field. */
  private readonly hdr = new Uint8Array(5);
  private hdrFill = 0;
  private done = false;
  private spentMs = 0;
  private steps = 0;

  constructor(
    private readonly total: number,
    private readonly budget: MsgpackBudget,
  ) {
    if (total > budget.maxBytes) this.fail(`${total} bytes, more than ${budget.maxBytes}`, 0);
  }

  private fail(what: string, at: number): never {
    throw new MsgpackBudgetError(`msgpack refused at byte ${at}: ${what}`);
  }

  /** Checks the next bytes of the stream. Throws MsgpackBudgetError as soon as they cannot be a valid value. */
  push(b: Uint8Array): void {
    const t0 = Date.now();
    let i = 0;
    while (i < b.length) {
      if ((++this.steps & 0xfff) === 0 && this.spentMs + Date.now() - t0 > this.budget.maxMs)
        this.fail(`walk exceeded ${this.budget.maxMs} ms`, this.pos);
      if (this.skip > 0) {
        const n = Math.min(this.skip, b.length - i);
        this.skip -= n;
        this.pos += n;
        i += n;
        if (this.skip === 0) this.valueDone();
        continue;
      }
      if (this.done) this.fail(`${this.total - this.pos} bytes after the value`, this.pos);
      if (this.pos + this.hdrFill >= this.total) this.fail('more bytes than announced', this.pos);
      // Gather the type byte and its length field (they may arrive in different pushes).
      if (this.hdrFill === 0) this.hdr[this.hdrFill++] = b[i++]!;
      const want = 1 + lengthBytes(this.hdr[0]!);
      while (this.hdrFill < want && i < b.length) this.hdr[this.hdrFill++] = b[i++]!;
      if (this.hdrFill < want) break;
      const at = this.pos;
      this.pos += want;
      this.hdrFill = 0;
      this.value(at, want);
    }
    this.spentMs += Date.now() - t0;
  }

  /** The stream is complete: exactly one value, nothing missing. */
  end(): void {
    if (this.hdrFill > 0) {
      const want = 1 + lengthBytes(this.hdr[0]!);
      this.fail(`needs ${want - this.hdrFill} more bytes, 0 left`, this.pos);
    }
    if (this.skip > 0) this.fail(`needs ${this.skip} more bytes, 0 left`, this.pos);
    if (!this.done) this.fail('truncated', this.pos);
    if (this.pos !== this.total) this.fail(`${this.total - this.pos} bytes after the value`, this.pos);
  }

  /** Bytes of the stream left after what was consumed. */
  private get left(): number {
    return this.total - this.pos;
  }

  private need(n: number, at: number): void {
    if (n > this.left) this.fail(`needs ${n} more bytes, ${this.left} left`, at);
  }

  /** A value whose header (type byte and length field, `len` bytes) starts at `at`. */
  private value(at: number, len: number): void {
    const { budget, open, isMap } = this;
    if (++this.elements > budget.maxElements) this.fail(`more than ${budget.maxElements} values`, at);
    const c = this.hdr[0]!;
    // Map keys become property names: a decoder refuses (or stringifies) arrays, maps and byte strings there.
    const d = open.length - 1;
    if (d >= 0 && isMap[d] && open[d]! % 2 === 0 && isComplexKey(c))
      this.fail('an array, map or bin as a map key', at);
    const dv = new DataView(this.hdr.buffer, 1, len - 1);
    const lenField =
      len === 2 ? dv.getUint8(0) : len === 3 ? dv.getUint16(0) : len === 5 ? dv.getUint32(0) : 0;
    if (c <= 0x7f || c >= 0xe0 || c === 0xc0 || c === 0xc2 || c === 0xc3) {
      // fixint, negative fixint, nil, false, true
    } else if (c <= 0x8f) {
      this.container((c & 0x0f) * 2, at, true);
      return;
    } else if (c <= 0x9f) {
      this.container(c & 0x0f, at, false);
      return;
    } else if (c <= 0xbf) {
      this.payload(c & 0x1f, at);
      return;
    } else if (c === 0xc4 || c === 0xc5 || c === 0xc6 || c === 0xd9 || c === 0xda || c === 0xdb) {
      this.payload(lenField, at);
      return;
    } else if (FIXED[c] !== undefined) {
      this.payload(FIXED[c]!, at);
      return;
    } else if (c === 0xdc || c === 0xdd) {
      this.container(lenField, at, false);
      return;
    } else if (c === 0xde || c === 0xdf) {
      this.container(lenField * 2, at, true);
      return;
    } else {
      // 0xc1 (never used), 0xc7-0xc9 and 0xd4-0xd8 (extensions)
      this.fail(c === 0xc1 ? 'reserved byte 0xc1' : `extension type (0x${c.toString(16)}) not accepted`, at);
    }
    this.valueDone();
  }

  /** `n` bytes of payload follow (checked against what the stream can still hold), then the value is complete. */
  private payload(n: number, at: number): void {
    this.need(n, at);
    this.skip = n;
    if (n === 0) this.valueDone();
  }

  private container(count: number, at: number, map: boolean): void {
    // Every value is at least one byte: a count the rest of the input cannot hold is refused before anything.
    if (count > this.budget.maxElements - this.elements)
      this.fail(`container of ${count} values exceeds the element budget`, at);
    if (count > this.left) this.fail(`container of ${count} values in ${this.left} bytes`, at);
    if (count === 0) {
      this.valueDone(); // an empty container is a complete value
      return;
    }
    if (this.open.length >= this.budget.maxDepth)
      this.fail(`nesting deeper than ${this.budget.maxDepth}`, at);
    this.open.push(count);
    this.isMap.push(map);
  }

  /** A value is complete: count it off its container(s); the stream's value is complete when none is open. */
  private valueDone(): void {
    closeValue(this.open, this.isMap);
    if (this.open.length === 0) this.done = true;
  }
}

/** Arrays, maps and bins: not usable as an object's property name. */
function isComplexKey(c: number): boolean {
  return (c >= 0x80 && c <= 0x9f) || (c >= 0xc4 && c <= 0xc6) || (c >= 0xdc && c <= 0xdf);
}

function closeValue(open: number[], isMap: boolean[]): void {
  while (open.length) {
    const i = open.length - 1;
    open[i]!--;
    if (open[i]! > 0) return;
    open.pop();
    isMap.pop();
  }
}
