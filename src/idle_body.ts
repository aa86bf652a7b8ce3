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
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stop = () => {
    clearTimeout(timer);
    timer = undefined;
  };
  // A byte stream, like the platform's request body, so BYOB readers keep working.
  const body = new ReadableStream({
    type: "bytes",
    async pull(controller) {
      try {
        // Skips empty reads: a byte stream may not enqueue them, and must enqueue something.
        for (;;) {
          stop();
          const { done, value } = await readWithin(reader, idleMs, (handle) => timer = handle);
          if (done) {
            controller.close();
            controller.byobRequest?.respond(0);
            return;
          }
          if (value.byteLength > 0) return controller.enqueue(value);
        }
      } catch (error) {
        controller.error(error);
        await reader.cancel(error).catch(() => {});
      } finally {
        stop();
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

/** One read that fails with `body_incomplete` when nothing arrives within `idleMs`. */
function readWithin(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  idleMs: number,
  setTimer: (handle: ReturnType<typeof setTimeout>) => void,
): Promise<ReadableStreamReadResult<Uint8Array>> {
  const timeout = new Promise<never>((_, reject) => {
    setTimer(setTimeout(() => {
      reject(new ResumableError("body_incomplete", `Request body sent nothing for ${idleMs} ms`));
    }, idleMs));
  });
  return Promise.race([reader.read(), timeout]);
}
