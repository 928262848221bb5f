// Little-endian byte helpers shared by every codec (the protocol is host byte order, i.e. LE on x86; spec
// "Header"). Encoders check their inputs: DataView silently wraps out-of-range values, which would put a valid
// looking but wrong number on the wire. Those checks throw RangeError because they are caller bugs, not
// protocol errors.

/** The largest u32 (wire fields are checked against it on encode). */
export const U32_MAX = 0xffffffff;
/** The largest u64, as a bigint. */
export const U64_MAX = (1n << 64n) - 1n;

/** A DataView over exactly the bytes of `b` (which may be a view into a larger buffer, e.g. a Node Buffer). */
export function viewOf(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * A plain Uint8Array view of `b[start, start+length)` without copying. Plain (not `Buffer`) so decoded values
 * compare equal whatever the caller passed in; it aliases the input, like every data field this package decodes.
 */
export function sliceView(b: Uint8Array, start: number, length = b.byteLength - start): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset + start, length);
}

export function u16(dv: DataView, off: number): number {
  return dv.getUint16(off, true);
}
export function u32(dv: DataView, off: number): number {
  return dv.getUint32(off, true);
}
export function u64(dv: DataView, off: number): bigint {
  return dv.getBigUint64(off, true);
}

/**
 * Little-endian loads from a plain Uint8Array, for the decoders on the hot path (DMA_MAP/DMA_UNMAP): no DataView
 * is created per message (see setU32 below for why a DataView over a small array is not free). The caller has
 * checked the length.
 */
export function getU32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16)) + b[off + 3]! * 0x1000000;
}
/** The u64 at `off` as a bigint; made from one number when it fits in 53 bits (no bigint arithmetic then). */
export function getU64(b: Uint8Array, off: number): bigint {
  const lo = getU32(b, off);
  const hi = getU32(b, off + 4);
  return hi < 0x200000 ? BigInt(hi * 0x100000000 + lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

/**
 * The last value a u64 field decoded to, for fields that nearly always repeat (getU64Memo): the bigint made for
 * it is reused while the bytes are the same (bigints are immutable values, so sharing one is safe).
 */
export interface U64Memo {
  lo: number;
  hi: number;
  value: bigint;
}

/** A U64Memo holding nothing yet. */
export function newU64Memo(): U64Memo {
  return { lo: -1, hi: -1, value: 0n };
}

/**
 * getU64() for a field that usually repeats (the size of QEMU's page-sized DMA_MAPs and DMA_UNMAPs): BigInt() of
 * a number is a runtime call in V8, comparing two numbers is not.
 */
export function getU64Memo(b: Uint8Array, off: number, memo: U64Memo): bigint {
  const lo = getU32(b, off);
  const hi = getU32(b, off + 4);
  if (lo === memo.lo && hi === memo.hi) return memo.value;
  const v = hi < 0x200000 ? BigInt(hi * 0x100000000 + lo) : (BigInt(hi) << 32n) | BigInt(lo);
  memo.lo = lo;
  memo.hi = hi;
  memo.value = v;
  return v;
}

function badField(field: string, what: string, v: unknown): never {
  throw new RangeError(`${field} must be ${what} (got ${String(v)})`);
}

export function checkU16(v: number, field: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) badField(field, 'a u16', v);
  return v;
}
export function checkU32(v: number, field: string): number {
  if (!Number.isInteger(v) || v < 0 || v > U32_MAX) badField(field, 'a u32', v);
  return v;
}
export function checkU64(v: bigint, field: string): bigint {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) badField(field, 'a u64 bigint', v);
  return v;
}

export function putU16(dv: DataView, off: number, v: number, field: string): void {
  dv.setUint16(off, checkU16(v, field), true);
}
export function putU32(dv: DataView, off: number, v: number, field: string): void {
  dv.setUint32(off, checkU32(v, field), true);
}
export function putU64(dv: DataView, off: number, v: bigint, field: string): void {
  dv.setBigUint64(off, checkU64(v, field), true);
}

/**
 * Little-endian stores into a plain Uint8Array, for the encoders on the hot path (REGION_READ/WRITE and DMA_UNMAP
 * replies): a DataView needs the array's ArrayBuffer, and asking a small (on-heap) array for it makes V8 give it a
 * backing store of its own, a malloc per reply.
 */
export function setU32(b: Uint8Array, off: number, v: number, field: string): void {
  checkU32(v, field);
  b[off] = v;
  b[off + 1] = v >>> 8;
  b[off + 2] = v >>> 16;
  b[off + 3] = v >>> 24;
}
export function setU64(b: Uint8Array, off: number, v: bigint, field: string): void {
  checkU64(v, field);
  // Most values (offsets, addresses below 2^53) fit a number exactly: no bigint arithmetic then.
  if (v <= 0x1fffffffffffffn) {
    const n = Number(v);
    const lo = n % 0x100000000;
    setU32(b, off, lo, field);
    setU32(b, off + 4, (n - lo) / 0x100000000, field);
    return;
  }
  setU32(b, off, Number(v & 0xffffffffn), field);
  setU32(b, off + 4, Number(v >> 32n), field);
}

/** A zeroed buffer of `n` bytes and a DataView over it. */
export function alloc(n: number): { bytes: Uint8Array; dv: DataView } {
  const bytes = new Uint8Array(n);
  return { bytes, dv: new DataView(bytes.buffer) };
}

/** Lower-case hex without separators, e.g. for logs and test vectors. */
export function toHex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

/** Parses hex, ignoring whitespace, `_` and `|` separators (so vectors can be laid out by field). */
export function fromHex(hex: string): Uint8Array {
  const clean = hex.replace(/[\s_|]/g, '');
  if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) throw new RangeError(`bad hex string: ${hex}`);
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Concatenates byte arrays into one new Uint8Array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}
