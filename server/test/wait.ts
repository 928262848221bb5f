// Waiting in the server package's tests (this TypeScript project cannot import test/lib/wait.ts, the helper of
// the suites under test/): a pause, and polling a condition the device or session makes true asynchronously.

/** Resolves after `ms` (e.g. to check that nothing arrives). */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` each millisecond or two until it holds; throws `timed out waiting for <what>` after `timeoutMs`. */
export async function until(cond: () => boolean, timeoutMs = 2000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
}
