// Byte counting between the request body and storage. Pull-based: nothing is read ahead of what
// the storage consumes, so memory stays bounded by the storage's own buffer.
import { type ByteTapHooks, tapBytes } from "./_byte_tap.ts";
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
  let received = 0;
  const expected = () => allowedSizes.join(" or ");
  return tapBytes(source, {
    readError: (cause) =>
      cause instanceof ResumableError
        ? cause
        : new ResumableError("body_incomplete", `Body of ${label} ended after ${received} bytes`, { cause }),
    afterRead(bytes) {
      if (bytes === undefined) {
        if (!allowedSizes.includes(received)) {
          throw new ResumableError(
            "chunk_size_mismatch",
            `Received ${received} bytes for ${label}, expected ${expected()}`,
          );
        }
        return;
      }
      received += bytes.byteLength;
      if (received > max) {
        throw new ResumableError(
          "chunk_size_mismatch",
          `Received more than ${max} bytes for ${label}, expected ${expected()}`,
        );
      }
    },
  });
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
  return tapBytes(source, byteLimit(limit, failure));
}

/**
 * The limit of {@linkcode limitStream} as tap hooks, for a body read with `hookedReader`. The error
 * a read fails with (too large, or the body broke off) is also recorded in `failure`.
 */
export function byteLimit(limit: number, failure: { error?: ResumableError } = {}): ByteTapHooks {
  let received = 0;
  return {
    readError(cause) {
      failure.error = new ResumableError("body_incomplete", "Request body ended early", { cause });
      return failure.error;
    },
    afterRead(bytes) {
      received += bytes?.byteLength ?? 0;
      if (received > limit) {
        failure.error = new ResumableError("body_too_large", `Request body is larger than ${limit} bytes`);
        throw failure.error;
      }
    },
  };
}
