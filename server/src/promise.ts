// Device hooks may answer synchronously or with a promise (a device written in plain JavaScript may return any
// thenable). Callers stay synchronous on the common path and wait only when a hook really returned a promise.

/** Whether a hook's result must be awaited: anything with a `then` method. */
export const isPromise = <T>(v: T | Promise<T>): v is Promise<T> =>
  typeof (v as Promise<T> | undefined)?.then === 'function';
