// Waiting in tests, for every suite under test/: a pause, and polling a condition that the system under test
// makes true asynchronously (a server in this process or a child, QEMU, a guest).

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every `intervalMs` until it holds: true, or false when it did not within `timeoutMs`. */
export async function poll(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  intervalMs = 5,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > deadline) return false;
    await sleep(intervalMs);
  }
}

/** poll() that fails the test: throws `timed out waiting for <what>` when `cond` did not hold in time. */
export async function until(
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 2000,
  what = 'condition',
  intervalMs = 2,
): Promise<void> {
  if (!(await poll(cond, timeoutMs, intervalMs))) throw new Error(`timed out waiting for ${what}`);
}
