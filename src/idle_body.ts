/**
 * Bounds how long a stalled request body may hold a connection, a temp file and memory: a body that
 * delivers no bytes for `idleMs` fails with `body_incomplete`, like a client that went away, so the
 * chunk is never stored and its temp data is removed by the storage.
 *
 * @module
 */

import { type ByteTapHooks, tapBytes } from "./_byte_tap.ts";
import { after } from "./_clock.ts";
import { ResumableError } from "./errors.ts";

/**
 * Returns `source` (a request body) wrapped in an idle timer, or `null` for a request without a
 * body. The timer runs only while a read is pending, so a slow consumer (storage) never trips it. The
 * body is wrapped, not the request: a new Request per upload cost about 5 % of a 1 MiB request's
 * main-thread time under Deno.serve. With `detachPieces`, the pieces the body hands out whole are
 * marked for the storage to free once written (see _owned_bytes.ts).
 */
export function withIdleTimeout(
  source: ReadableStream<Uint8Array> | null,
  idleMs: number,
  detachPieces = false,
): ReadableStream<Uint8Array> | null {
  if (source === null) return null;
  return tapBytes(source, idleTimeout(idleMs), detachPieces);
}

/**
 * The idle timer as tap hooks, for {@linkcode withIdleTimeout} and for a body read with
 * `hookedReader`: a body that delivers nothing for `idleMs` while a read waits fails the read.
 */
export function idleTimeout(idleMs: number): ByteTapHooks {
  // One timer per idle period, not one per read: a body arrives in thousands of 64 KiB reads, and a
  // timer plus a promise race on each cost about a tenth of the throughput in bench/run.ts.
  let pendingSince = -1;
  let cancelTimer: (() => void) | undefined;
  let stalled: ResumableError | undefined;
  let cancelSource: (reason: unknown) => void = () => {};
  const watch = () => {
    cancelTimer = undefined;
    if (pendingSince < 0) return;
    const idle = performance.now() - pendingSince;
    if (idle < idleMs) {
      cancelTimer = after(idleMs - idle, watch);
      return;
    }
    stalled = new ResumableError("body_incomplete", `Request body sent nothing for ${idleMs} ms`);
    // Settles the pending read as done; afterRead then reports the stall.
    cancelSource(stalled);
  };
  return {
    start(cancel) {
      cancelSource = cancel;
    },
    beforeRead() {
      pendingSince = performance.now();
      cancelTimer ??= after(idleMs, watch);
    },
    afterRead() {
      pendingSince = -1;
      if (stalled) throw stalled;
    },
    readError: (cause) => stalled ?? cause,
    finish() {
      cancelTimer?.();
      cancelTimer = undefined;
      pendingSince = -1;
    },
  };
}
