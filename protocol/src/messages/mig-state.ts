// Migration v2 device states and the state machine (spec "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE", the same FSM as
// Linux's vfio_mig_get_next_state without the P2P states, which vfio-user does not use).

import { fail } from '../errors.js';

/**
 * Migration v2 device states (VFIO_DEVICE_STATE_*): ERROR, STOP, RUNNING, STOP_COPY, RESUMING, PRE_COPY and the P2P
 * states.
 */
export const MigState = {
  ERROR: 0,
  STOP: 1,
  RUNNING: 2,
  STOP_COPY: 3,
  RESUMING: 4,
  RUNNING_P2P: 5,
  PRE_COPY: 6,
  PRE_COPY_P2P: 7,
} as const;
/** One of the MigState numbers. */
export type MigStateValue = (typeof MigState)[keyof typeof MigState];

/** The MIGRATION feature's GET data: u64 flags. STOP_COPY is mandatory; RUNNING and ERROR are implied. */
export const MigrationFlags = { STOP_COPY: 1n, P2P: 2n, PRE_COPY: 4n } as const;

const { STOP, RUNNING, STOP_COPY, RESUMING, PRE_COPY } = MigState;

/** States a client may request with SET: not ERROR (spec: cannot be requested), not the unused P2P states. */
export function isRequestableMigState(state: number): boolean {
  return (
    state === STOP || state === RUNNING || state === STOP_COPY || state === RESUMING || state === PRE_COPY
  );
}

/** next[cur][target]: the next arc on the shortest path; undefined = no path (e.g. STOP_COPY -> PRE_COPY). */
const NEXT: Record<number, Partial<Record<number, number>>> = {
  [STOP]: {
    [STOP]: STOP,
    [RUNNING]: RUNNING,
    [STOP_COPY]: STOP_COPY,
    [RESUMING]: RESUMING,
    [PRE_COPY]: RUNNING,
  },
  [RUNNING]: { [STOP]: STOP, [RUNNING]: RUNNING, [STOP_COPY]: STOP, [RESUMING]: STOP, [PRE_COPY]: PRE_COPY },
  [STOP_COPY]: { [STOP]: STOP, [RUNNING]: STOP, [STOP_COPY]: STOP_COPY, [RESUMING]: STOP },
  [RESUMING]: { [STOP]: STOP, [RUNNING]: STOP, [STOP_COPY]: STOP, [RESUMING]: RESUMING, [PRE_COPY]: STOP },
  // Saving states never appear as interior steps: PRE_COPY -> STOP goes through RUNNING (FEA-18).
  [PRE_COPY]: {
    [STOP]: RUNNING,
    [RUNNING]: RUNNING,
    [STOP_COPY]: STOP_COPY,
    [RESUMING]: RUNNING,
    [PRE_COPY]: PRE_COPY,
  },
};

/**
 * The states a device passes through from `from` to `to`, excluding `from` (empty when equal). Throws EINVAL for
 * an impossible request: from ERROR (only DEVICE_RESET leaves it), to ERROR or a P2P state, to PRE_COPY when
 * the device has no pre-copy, or STOP_COPY -> PRE_COPY (FEA-12..15).
 */
export function migStatePath(from: number, to: number, opts: { preCopy?: boolean } = {}): number[] {
  const preCopy = opts.preCopy ?? true;
  if (!isRequestableMigState(to)) fail('BAD_STATE_TRANSITION', `migration state ${to} cannot be requested`);
  if (to === PRE_COPY && !preCopy) fail('BAD_STATE_TRANSITION', 'device does not support PRE_COPY');
  const path: number[] = [];
  let cur = from;
  while (cur !== to) {
    const next = NEXT[cur]?.[to];
    if (next === undefined) fail('BAD_STATE_TRANSITION', `no migration path from state ${from} to ${to}`);
    path.push(next);
    cur = next;
  }
  return path;
}
