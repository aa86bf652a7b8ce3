/**
 * Bounds how long a stalled request body may hold a connection, a temp file and memory: a body that
 * delivers no bytes for `idleMs` fails with `body_incomplete`, like a client that went away, so the
 * chunk is never stored and its temp data is removed by the storage.
 *
 * @module
 */

import { ResumableError } from "./errors.ts";

/**
 * Returns `request` with its body wrapped in an idle timer, or `request` itself when it has no body.
 * The timer runs only while a read is pending, so a slow consumer (storage) never trips it.
 */
export function withIdleTimeout(request: Request, idleMs: number): Request {
  const source = request.body;
  if (source === null) return request;
  const reader = source.getReader();
  // One timer per idle period, not one per read: a body arrives in thousands of 64 KiB reads, and a
  // timer plus a promise race on each cost about a tenth of the throughput in bench/run.ts.
  let pendingSince = -1;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stalled: ResumableError | undefined;
  const watch = () => {
    timer = undefined;
    if (pendingSince < 0) return;
    const idle = performance.now() - pendingSince;
    if (idle < idleMs) {
      timer = setTimeout(watch, idleMs - idle);
      return;
    }
    stalled = new ResumableError("body_incomplete", `Request body sent nothing for ${idleMs} ms`);
    // Settles the pending read as done; the pull below then reports the stall.
    reader.cancel(stalled).catch(() => {});
  };
  const stop = () => {
    clearTimeout(timer);
    timer = undefined;
    pendingSince = -1;
  };
  // A byte stream, like the platform's request body, so BYOB readers keep working.
  const body = new ReadableStream({
    type: "bytes",
    async pull(controller) {
      try {
        // Skips empty reads: a byte stream may not enqueue them, and must enqueue something.
        for (;;) {
          pendingSince = performance.now();
          timer ??= setTimeout(watch, idleMs);
          const { done, value } = await reader.read();
          pendingSince = -1;
          if (stalled) throw stalled;
          if (done) {
            stop();
            controller.close();
            controller.byobRequest?.respond(0);
            return;
          }
          if (value.byteLength > 0) return controller.enqueue(value);
        }
      } catch (error) {
        stop();
        controller.error(error);
        await reader.cancel(error).catch(() => {});
      }
    },
    async cancel(reason) {
      stop();
      await reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
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
