// Deadlines for the core without `setTimeout`. Under Deno, `setTimeout` is Node's (it returns a
// Node `Timeout`), and its first call loads that part of the Node compatibility layer: a server
// timing its request bodies with it peaked 5 to 7 MiB higher in bench conditions. The Web's
// `AbortSignal.timeout` runs on the runtime's own timers. It cannot be cancelled, so every deadline
// shares one: it is armed for the earliest deadline, at most STEP_MS ahead, and a cancelled deadline
// is only forgotten. Deno keeps a process alive for a pending one, so the bounded step is how late
// a process can exit after its last deadline is cancelled.

interface Entry {
  time: number;
  fire: () => void;
}

const STEP_MS = 250;
const entries = new Set<Entry>();
// When the armed timer fires; Infinity when none is armed.
let armedFor = Infinity;

function arm(deadline: number): void {
  const time = Math.min(deadline, performance.now() + STEP_MS);
  if (time >= armedFor) return;
  armedFor = time;
  const delay = Math.max(0, Math.ceil(time - performance.now()));
  AbortSignal.timeout(delay).addEventListener("abort", () => {
    // An earlier deadline may have armed a newer timer meanwhile; this one still runs what is due.
    if (armedFor === time) armedFor = Infinity;
    runDue();
  }, { once: true });
}

function runDue(): void {
  const now = performance.now();
  let next = Infinity;
  for (const entry of [...entries]) {
    if (!entries.has(entry)) continue; // cancelled by an earlier callback of this run
    if (entry.time > now) {
      next = Math.min(next, entry.time);
      continue;
    }
    entries.delete(entry);
    try {
      entry.fire();
    } catch (error) {
      // Surfaces like an error thrown by a timer callback, without stopping the other deadlines.
      queueMicrotask(() => {
        throw error;
      });
    }
  }
  // Deadlines added by the callbacks armed the timer themselves.
  if (next < Infinity) arm(next);
}

/** Calls `fire` once, `delayMs` from now, unless the returned function is called first. */
export function after(delayMs: number, fire: () => void): () => void {
  const entry: Entry = { time: performance.now() + delayMs, fire };
  entries.add(entry);
  arm(entry.time);
  return () => {
    entries.delete(entry);
  };
}

/** How far the wall clock may move apart from the monotonic one before `preciseNow` follows it. */
const DRIFT_MS = 100;
// What `performance.now()` is offset by to read as the wall clock: at first the wall-clock time of
// its origin, as precise as it; after a jump, `Date.now()`'s whole milliseconds.
let offset = performance.timeOrigin;

/**
 * Wall-clock time in ms since the epoch, with the sub-millisecond precision of `performance.now()`:
 * a removal and a request that follow each other within one millisecond are still told apart.
 *
 * It follows `Date.now()`, which the stored times it is compared with come from: `performance.now()`
 * alone stops while a machine is suspended and ignores a stepped clock, and a process that slept
 * through ten minutes would have noted every removal as already forgotten. Like `Date.now()`, it
 * goes back when the clock is stepped back; holding it still instead would make every removal and
 * request until the clock caught up look simultaneous.
 */
export function preciseNow(): number {
  const monotonic = performance.now();
  const wall = Date.now();
  const now = offset + monotonic;
  if (Math.abs(now - wall) <= DRIFT_MS) return now;
  offset = wall - monotonic;
  return wall;
}
