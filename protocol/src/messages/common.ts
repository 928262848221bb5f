// Shared pieces of the message codecs: payload-size checks, fd-count rules and limits. Every check fails with
// EINVAL unless stated: that is what libvfio-user answers to a malformed request and what the conformance
// suite expects (docs/conformance-index.md).

import { DEFAULT_MAX_DATA_XFER_SIZE, type Limits, SCM_MAX_FD } from '../constants.js';
import { Errno, fail } from '../errors.js';

/** The payload of a reply (or request) that has none; decodes to `{}`. */
export type EmptyReply = Record<string, never>;

/**
 * How many fds a message may carry. `allowed`, when present, lists the only legal counts (SET_IRQS with
 * DATA_EVENTFD: exactly `count` to assign, or 0 to de-assign).
 */
export interface FdRule {
  min: number;
  max: number;
  allowed?: readonly number[];
}

/** The fd rule for a message that carries no fds. */
export const NO_FDS: FdRule = Object.freeze({ min: 0, max: 0 });
/** The fd rule for a message that may carry any number of fds (up to SCM_MAX_FD). */
export const ANY_FDS: FdRule = Object.freeze({ min: 0, max: SCM_MAX_FD });

/** Whether `fdCount` fds satisfy an fd rule. */
export function fdCountFits(rule: FdRule, fdCount: number): boolean {
  if (fdCount < rule.min || fdCount > rule.max) return false;
  return rule.allowed === undefined || rule.allowed.includes(fdCount);
}

/**
 * Enforces an fd rule on a received message. `fdCount` undefined means the caller did not say; nothing is checked
 * then. A count above the receiver's advertised `max_msg_fds` is EINVAL whatever the message (HDR-26, IRQS-35).
 */
export function checkFds(what: string, rule: FdRule, fdCount: number | undefined, limits?: Limits): void {
  if (fdCount === undefined) return;
  if (limits?.maxMsgFds !== undefined && fdCount > limits.maxMsgFds) {
    fail('BAD_FD_COUNT', `${what} carries ${fdCount} fds, more than max_msg_fds ${limits.maxMsgFds}`);
  }
  if (!fdCountFits(rule, fdCount)) {
    const expected = rule.allowed ? rule.allowed.join(' or ') : `${rule.min}..${rule.max}`;
    fail('BAD_FD_COUNT', `${what} carries ${fdCount} fds, expected ${expected}`);
  }
}

/**
 * For requests whose fds mean nothing: libvfio-user closes stray fds and processes the message, and the
 * conformance catalogue expects success (HDR-24). Only the max_msg_fds limit is enforced; the caller closes them.
 */
export function checkStrayFds(what: string, fdCount: number | undefined, limits?: Limits): void {
  checkFds(what, ANY_FDS, fdCount, limits);
}

// `length` rather than `byteLength` (the same for a Uint8Array): V8 (Node 20) inlines the first and calls a
// getter for the second, about 175 instructions per call on every decoded message (callgrind).
export function expectLength(payload: Uint8Array, n: number, what: string): void {
  if (payload.length !== n) {
    fail('BAD_PAYLOAD_SIZE', `${what} payload is ${payload.length} bytes, expected ${n}`);
  }
}

export function expectAtLeast(payload: Uint8Array, n: number, what: string): void {
  if (payload.length < n) {
    fail('BAD_PAYLOAD_SIZE', `${what} payload is ${payload.length} bytes, expected at least ${n}`);
  }
}

/** `argsz` below the fixed structure is EINVAL everywhere (MAP-05, UNM-03, INF-03, RGN-03, IRQI-03, IRQS-07). */
export function expectArgszAtLeast(argsz: number, n: number, what: string): void {
  if (argsz < n) fail('BAD_ARGSZ', `${what} argsz ${argsz} is below ${n}`);
}

/** The data limit to enforce: the caller's, else the spec's default 1 MiB. */
export function maxXfer(limits?: Limits): number {
  return limits?.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE;
}

export function checkXfer(
  what: string,
  count: number | bigint,
  limits?: Limits,
  errno: number = Errno.EINVAL,
): void {
  const max = maxXfer(limits);
  if (BigInt(count) > BigInt(max)) {
    fail('LIMIT_EXCEEDED', `${what} ${count} exceeds max_data_xfer_size ${max}`, errno);
  }
}

/** Reserved bits must be zero (spec: "reserved"); a set bit is EINVAL (MAP-07, UNM-05, FEA reserved ops). */
export function checkFlags(flags: number, allowed: number, what: string): void {
  const extra = (flags & ~allowed) >>> 0;
  if (extra !== 0)
    fail('BAD_FLAGS', `${what} flags 0x${flags.toString(16)} have unknown bits 0x${extra.toString(16)}`);
}

/** For empty payloads: any byte present is EINVAL. */
export function expectEmpty(payload: Uint8Array, what: string): EmptyReply {
  expectLength(payload, 0, what);
  return {};
}

export const EMPTY = new Uint8Array(0);
