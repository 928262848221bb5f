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
  const fail = (what: string, at: number): never => {
    throw new MsgpackBudgetError(`msgpack refused at byte ${at}: ${what}`);
  };
  if (b.length > budget.maxBytes) fail(`${b.length} bytes, more than ${budget.maxBytes}`, 0);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const t0 = Date.now();
  // `open[d]` = values still expected by the container at depth d+1 (bounded by maxDepth: no input-sized array).
  const open: number[] = [];
  // Whether open[d] is a map (its values alternate key, value: a key is due when an even count is left).
  const isMap: boolean[] = [];
  let elements = 0;
  let pos = 0;
  let steps = 0;
  let pushed = false;
  const need = (n: number, at: number) => {
    if (n > b.length - pos) fail(`needs ${n} more bytes, ${b.length - pos} left`, at);
  };
  const container = (count: number, at: number, map: boolean) => {
    // Every value is at least one byte: a count the rest of the input cannot hold is refused before anything.
    if (count > budget.maxElements - elements)
      fail(`container of ${count} values exceeds the element budget`, at);
    if (count > b.length - pos) fail(`container of ${count} values in ${b.length - pos} bytes`, at);
    if (count === 0) return; // an empty container is a complete value
    if (open.length >= budget.maxDepth) fail(`nesting deeper than ${budget.maxDepth}`, at);
    open.push(count);
    isMap.push(map);
    pushed = true;
  };
  do {
    if ((++steps & 0xfff) === 0 && Date.now() - t0 > budget.maxMs)
      fail(`walk exceeded ${budget.maxMs} ms`, pos);
    if (pos >= b.length) fail('truncated', pos);
    if (++elements > budget.maxElements) fail(`more than ${budget.maxElements} values`, pos);
    const at = pos;
    const c = b[pos++]!;
    pushed = false;
    // Map keys become property names: a decoder refuses (or stringifies) arrays, maps and byte strings there.
    const d = open.length - 1;
    if (d >= 0 && isMap[d] && open[d]! % 2 === 0 && isComplexKey(c))
      fail('an array, map or bin as a map key', at);
    if (c <= 0x7f || c >= 0xe0 || c === 0xc0 || c === 0xc2 || c === 0xc3) {
      // fixint, negative fixint, nil, false, true
    } else if (c <= 0x8f) {
      container((c & 0x0f) * 2, at, true);
    } else if (c <= 0x9f) {
      container(c & 0x0f, at, false);
    } else if (c <= 0xbf) {
      need(c & 0x1f, at);
      pos += c & 0x1f;
    } else {
      switch (c) {
        case 0xc4: // bin8/16/32, str8/16/32: length then bytes
        case 0xd9:
          need(1, at);
          need(1 + dv.getUint8(pos), at);
          pos += 1 + dv.getUint8(pos);
          break;
        case 0xc5:
        case 0xda:
          need(2, at);
          need(2 + dv.getUint16(pos), at);
          pos += 2 + dv.getUint16(pos);
          break;
        case 0xc6:
        case 0xdb:
          need(4, at);
          need(4 + dv.getUint32(pos), at);
          pos += 4 + dv.getUint32(pos);
          break;
        case 0xca: // float32
          need(4, at);
          pos += 4;
          break;
        case 0xcb: // float64
          need(8, at);
          pos += 8;
          break;
        case 0xcc: // uint8..64, int8..64
        case 0xd0:
          need(1, at);
          pos += 1;
          break;
        case 0xcd:
        case 0xd1:
          need(2, at);
          pos += 2;
          break;
        case 0xce:
        case 0xd2:
          need(4, at);
          pos += 4;
          break;
        case 0xcf:
        case 0xd3:
          need(8, at);
          pos += 8;
          break;
        case 0xdc:
          need(2, at);
          pos += 2;
          container(dv.getUint16(pos - 2), at, false);
          break;
        case 0xdd:
          need(4, at);
          pos += 4;
          container(dv.getUint32(pos - 4), at, false);
          break;
        case 0xde:
          need(2, at);
          pos += 2;
          container(dv.getUint16(pos - 2) * 2, at, true);
          break;
        case 0xdf:
          need(4, at);
          pos += 4;
          container(dv.getUint32(pos - 4) * 2, at, true);
          break;
        default:
          // 0xc1 (never used), 0xc7-0xc9 and 0xd4-0xd8 (extensions)
          fail(c === 0xc1 ? 'reserved byte 0xc1' : `extension type (0x${c.toString(16)}) not accepted`, at);
      }
    }
    // Unless it opened a container, this value is complete: count it off its container(s).
    if (!pushed) closeValue(open, isMap);
  } while (open.length);
  if (pos !== b.length) fail(`${b.length - pos} bytes after the value`, pos);
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
