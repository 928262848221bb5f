// Saturating 64-bit range arithmetic. Every offset+size a peer sends can wrap past 2^64 (conformance MAP-17,
// RW-10, IRQS-15); comparing with bigint avoids the wrap, and these helpers name the rule once.

import { U32_MAX, U64_MAX } from './bytes.js';

/** 2^64: the end of the 64-bit address space (a range may end exactly there). */
export const U64_END = U64_MAX + 1n;

/** True when [start, start+size) does not fit below 2^64. A range ending exactly at 2^64 is allowed. */
export function rangeOverflows(start: bigint, size: bigint): boolean {
  return start + size > U64_END;
}

/** start + size, saturated at 2^64 - 1 (libvfio-user's `satadd_u64`). */
export function saturatingAdd64(a: bigint, b: bigint): bigint {
  // (not Math.min: it does not take bigints)
  const s = a + b;
  if (s > U64_MAX) return U64_MAX;
  return s;
}

/**
 * True when [offset, offset+count) lies inside [0, limit). The sum is computed without wrapping, so offset
 * 2^64-1 with count 256 is out of range (RW-10), and count 0 at offset == limit is in range.
 */
export function rangeWithin(offset: bigint, count: bigint, limit: bigint): boolean {
  return offset >= 0n && count >= 0n && offset + count <= limit;
}

/** The u32 form for IRQ vectors: [start, start+count) inside [0, total) without u32 wrap (IRQS-13..15). */
export function u32RangeWithin(start: number, count: number, total: number): boolean {
  return start + count <= total && start + count <= U32_MAX + 1;
}

/** True when the two ranges share at least one byte (empty ranges never overlap). */
export function rangesOverlap(aStart: bigint, aSize: bigint, bStart: bigint, bSize: bigint): boolean {
  if (aSize === 0n || bSize === 0n) return false;
  return aStart < bStart + bSize && bStart < aStart + aSize;
}

/** True for 1, 2, 4, ... (0 is not a power of two). */
export function isPowerOfTwo(v: bigint): boolean {
  return v > 0n && (v & (v - 1n)) === 0n;
}
