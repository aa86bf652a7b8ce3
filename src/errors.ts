/**
 * Domain errors of the upload handler. They carry a stable {@linkcode ErrorCode}
 * and no HTTP knowledge: `response.ts` is the one place that maps codes to statuses.
 *
 * @module
 */

/**
 * Stable machine-readable reasons an upload request is refused.
 *
 * - `invalid_parameters`: a protocol parameter is missing or malformed.
 * - `invalid_identifier`: the upload identifier is empty, too long or has control characters.
 * - `chunk_out_of_range`: the chunk number is outside `1..N` for the declared sizes.
 * - `chunk_size_mismatch`: the declared or received bytes differ from what this chunk must hold.
 * - `upload_mismatch`: the chunk disagrees with earlier chunks of the same upload (size, chunk size, name).
 * - `file_too_large`: the declared file size is above `maxFileSize`.
 * - `too_many_chunks`: the upload would need more than `maxChunks` chunks.
 * - `chunk_too_large`: the declared chunk size is above `maxChunkSize`.
 * - `body_too_large`: the request body is larger than the largest legal chunk.
 * - `body_incomplete`: the request body ended early or was aborted.
 * - `malformed_body`: the multipart body cannot be parsed.
 * - `unsupported_media_type`: the body is neither multipart with a file part nor a raw chunk.
 * - `method_not_allowed`: the HTTP method is not one the handler serves.
 * - `unauthorized`: the `authorize` hook (or `scope`) found no valid credentials.
 * - `forbidden`: the `authorize` hook refused this user this upload.
 * - `origin_not_allowed`: a CORS preflight from an origin the `cors` option does not allow.
 * - `checksum_mismatch`: the chunk's bytes do not match the digest the client sent; worth a retry.
 * - `too_many_uploads`: this scope already has `maxUploadsPerScope` uploads in progress.
 * - `storage_full`: starting this upload would put more than `maxPendingBytes` in storage.
 * - `storage_unavailable`: the storage failed for a reason worth retrying.
 * - `upload_removed`: the upload was cancelled (or expired) after this chunk was sent; worth a retry
 *   only if the same file is being sent again.
 * - `internal_error`: a bug in the handler or a hook; logged through `onError`.
 */
export type ErrorCode =
  | "invalid_parameters"
  | "invalid_identifier"
  | "chunk_out_of_range"
  | "chunk_size_mismatch"
  | "upload_mismatch"
  | "file_too_large"
  | "too_many_chunks"
  | "chunk_too_large"
  | "body_too_large"
  | "body_incomplete"
  | "malformed_body"
  | "unsupported_media_type"
  | "method_not_allowed"
  | "unauthorized"
  | "forbidden"
  | "origin_not_allowed"
  | "checksum_mismatch"
  | "too_many_uploads"
  | "storage_full"
  | "storage_unavailable"
  | "upload_removed"
  | "internal_error";

/** Every {@linkcode ErrorCode}, for exhaustive tables and tests. */
export const ERROR_CODES: readonly ErrorCode[] = [
  "invalid_parameters",
  "invalid_identifier",
  "chunk_out_of_range",
  "chunk_size_mismatch",
  "upload_mismatch",
  "file_too_large",
  "too_many_chunks",
  "chunk_too_large",
  "body_too_large",
  "body_incomplete",
  "malformed_body",
  "unsupported_media_type",
  "method_not_allowed",
  "unauthorized",
  "forbidden",
  "origin_not_allowed",
  "checksum_mismatch",
  "too_many_uploads",
  "storage_full",
  "storage_unavailable",
  "upload_removed",
  "internal_error",
];

/**
 * An upload request the handler refuses, with a stable {@linkcode ErrorCode}.
 *
 * @example Telling a refused chunk apart from a bug
 * ```ts
 * import { ResumableError } from "@resumable/server";
 * import assert from "node:assert/strict";
 *
 * const error = new ResumableError("file_too_large", "File is 2 GiB, the limit is 1 GiB");
 * assert.equal(error.code, "file_too_large");
 * assert.ok(error instanceof Error);
 * ```
 */
export class ResumableError extends Error {
  /** The stable reason, safe to branch on. */
  readonly code: ErrorCode;

  /**
   * Creates an error with a stable code and a human-readable message.
   *
   * @param code The stable reason.
   * @param message A sentence for the person uploading; sent in the response body.
   * @param options The underlying cause, if any.
   */
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ResumableError";
    this.code = code;
  }
}
