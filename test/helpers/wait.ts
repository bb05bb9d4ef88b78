/** Waiting in tests: event-loop turns and polling a condition against real time. */

/** Let the event loop run (host socket I/O, microtasks). */
export function settle(ms = 0): Promise<void> {
  return ms > 0 ? new Promise((r) => setTimeout(r, ms)) : new Promise((r) => setImmediate(r));
}

/** Poll `cond` over event-loop turns until true (or throw after `timeoutMs` of real time). */
export async function waitFor(cond: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await settle(2);
  }
}

/** Poll `fn` every 5 ms until it returns something truthy, and return that (or throw after `timeoutMs`). */
export async function waitForValue<T>(fn: () => T | undefined | null | false, timeoutMs = 3000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}
