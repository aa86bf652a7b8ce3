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
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(
            new ResumableError(
              "body_incomplete",
              `Request body sent nothing for ${idleMs} ms`,
            ),
          );
        }, idleMs);
      });
      try {
        const { done, value } = await Promise.race([reader.read(), timeout]);
        if (done) controller.close();
        else controller.enqueue(value);
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
    signal: request.signal,
    // Required by the Fetch standard for a stream body; not yet in every lib.dom typing.
    ...({ duplex: "half" } as RequestInit),
  });
}
