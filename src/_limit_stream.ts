// Byte counting between the request body and storage. Pull-based: nothing is read ahead of what
// the storage consumes, so memory stays bounded by the storage's own buffer.
import { ResumableError } from "./errors.ts";

/**
 * Passes `source` through, failing with `chunk_size_mismatch` or `body_too_large` as soon as more
 * than the largest allowed size has arrived, and at the end unless the total is one of
 * `allowedSizes`. A read error of the source (client gone) becomes `body_incomplete`.
 */
export function exactSizeStream(
  source: ReadableStream<Uint8Array>,
  allowedSizes: readonly number[],
  label: string,
): ReadableStream<Uint8Array> {
  const max = Math.max(...allowedSizes);
  const reader = source.getReader();
  let received = 0;
  const expected = () => allowedSizes.join(" or ");
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (cause) {
        controller.error(
          new ResumableError(
            "body_incomplete",
            `Body of ${label} ended after ${received} bytes`,
            { cause },
          ),
        );
        return;
      }
      if (result.done) {
        if (allowedSizes.includes(received)) controller.close();
        else {
          controller.error(
            new ResumableError(
              "chunk_size_mismatch",
              `Received ${received} bytes for ${label}, expected ${expected()}`,
            ),
          );
        }
        return;
      }
      received += result.value.byteLength;
      if (received > max) {
        const error = new ResumableError(
          "chunk_size_mismatch",
          `Received more than ${max} bytes for ${label}, expected ${expected()}`,
        );
        controller.error(error);
        await reader.cancel(error).catch(() => {});
        return;
      }
      controller.enqueue(result.value);
    },
    async cancel(reason) {
      await reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
}

/**
 * Passes `source` through but fails with `body_too_large` once more than `limit` bytes arrive:
 * protects a parser that would otherwise buffer an unbounded body.
 */
export function limitStream(
  source: ReadableStream<Uint8Array>,
  limit: number,
  failure: { error?: ResumableError } = {},
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let received = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) return controller.close();
        received += value.byteLength;
        if (received > limit) {
          const error = new ResumableError(
            "body_too_large",
            `Request body is larger than ${limit} bytes`,
          );
          failure.error = error;
          controller.error(error);
          await reader.cancel(error).catch(() => {});
          return;
        }
        controller.enqueue(value);
      } catch (cause) {
        failure.error = new ResumableError(
          "body_incomplete",
          "Request body ended early",
          { cause },
        );
        controller.error(failure.error);
      }
    },
    async cancel(reason) {
      await reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
}
