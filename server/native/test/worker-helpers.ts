// Re-exports for worker.ts (one import site keeps the worker body short).
import { eventfd } from '../lib/index.js';

export * from '../lib/index.js';

/** n eventfds the worker leaves to the queued message (their own copies are leaked on purpose: the worker dies). */
export function taggedEventfdsForWorker(n: number): number[] {
  return Array.from({ length: n }, (_, i) => eventfd(i + 1));
}
