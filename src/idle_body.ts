/**
 * Bounds how long a stalled request body may hold a connection, a temp file and memory: a body that
 * delivers no bytes for `idleMs` fails with `body_incomplete`, like a client that went away, so the
 * chunk is never stored and its temp data is removed by the storage.
 *
 * @module
 */

import { tapBytes } from "./_byte_tap.ts";
import { ResumableError } from "./errors.ts";

/**
 * Returns `request` with its body wrapped in an idle timer, or `request` itself when it has no body.
 * The timer runs only while a read is pending, so a slow consumer (storage) never trips it.
 */
export function withIdleTimeout(request: Request, idleMs: number): Request {
  const source = request.body;
  if (source === null) return request;
  // One timer per idle period, not one per read: a body arrives in thousands of 64 KiB reads, and a
  // timer plus a promise race on each cost about a tenth of the throughput in bench/run.ts.
  let pendingSince = -1;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stalled: ResumableError | undefined;
  let cancelSource: (reason: unknown) => void = () => {};
  const watch = () => {
    timer = undefined;
    if (pendingSince < 0) return;
    const idle = performance.now() - pendingSince;
    if (idle < idleMs) {
      timer = setTimeout(watch, idleMs - idle);
      return;
    }
    stalled = new ResumableError("body_incomplete", `Request body sent nothing for ${idleMs} ms`);
    // Settles the pending read as done; afterRead then reports the stall.
    cancelSource(stalled);
  };
  const body = tapBytes(source, {
    start(cancel) {
      cancelSource = cancel;
    },
    beforeRead() {
      pendingSince = performance.now();
      timer ??= setTimeout(watch, idleMs);
    },
    afterRead() {
      pendingSince = -1;
      if (stalled) throw stalled;
    },
    readError: (cause) => stalled ?? cause,
    finish() {
      clearTimeout(timer);
      timer = undefined;
      pendingSince = -1;
    },
  });
  return new Request(request.url, {
    method: request.method,
    headers: request.headers,
    body,
    // No `signal: request.signal`: following it subscribes to a signal Deno.serve aborts after every
    // successful response (and warns about). A client that goes away errors the body instead.
    // Required by the Fetch standard for a stream body; not yet in every lib.dom typing.
    ...({ duplex: "half" } as RequestInit),
  });
}
