// Concatenates chunk streams lazily: chunk i+1 is opened only after chunk i ends, so assembly holds
// one open chunk at a time whatever the chunk count, and cancelling stops the current one.

/** One stream of the concatenation of `count` streams produced on demand by `open(1..count)`. */
export function concatLazily(
  count: number,
  open: (index: number) => Promise<ReadableStream<Uint8Array>>,
): ReadableStream<Uint8Array> {
  let index = 0;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let cancelled: { reason: unknown } | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (true) {
        if (!reader) {
          if (index === count) return controller.close();
          index += 1;
          const opened = await open(index);
          // Cancelled while the chunk was being opened: nothing else will cancel it (an S3 response
          // body would stay open).
          if (cancelled) return await opened.cancel(cancelled.reason);
          reader = opened.getReader();
        }
        const { done, value } = await reader.read();
        if (!done) return controller.enqueue(value);
        reader.releaseLock();
        reader = undefined;
      }
    },
    async cancel(reason) {
      cancelled = { reason };
      await reader?.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/** Passes `source` through, failing at the end unless exactly `size` bytes went by. */
export function expectTotalSize(
  source: ReadableStream<Uint8Array>,
  size: number,
): ReadableStream<Uint8Array> {
  let seen = 0;
  return source.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        seen += chunk.byteLength;
        controller.enqueue(chunk);
      },
      flush() {
        if (seen !== size) {
          throw new Error(`Assembled ${seen} bytes, expected ${size}`);
        }
      },
    }),
  );
}
